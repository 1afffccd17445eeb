//! Progress bars on the terminal, and nothing when stdout is not one.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress and result lines go.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stdout is a terminal, else none.
    pub fn for_stdout() -> Self {
        Progress::new(std::io::stdout().is_terminal())
    }

    /// Bars when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Progress {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout())),
        }
    }

    /// No bars (tests, child processes).
    pub fn hidden() -> Self {
        Progress::new(false)
    }

    /// A bar over `len` steps.
    pub fn bar(&self, len: u64, message: String) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(len));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg:<48} [{bar:30}] {percent:>3}% {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(message);
                bar
            }
            None => ProgressBar::hidden(),
        }
    }

    /// A spinner for work whose length is unknown.
    pub fn spinner(&self, message: String) -> ProgressBar {
        match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(message);
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
            None => ProgressBar::hidden(),
        }
    }

    /// Prints a result line above the bars (or plainly without them).
    pub fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => println!("{text}"),
        }
    }
}
