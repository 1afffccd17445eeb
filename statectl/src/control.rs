//! The control channel between a running job and `statectl savepoint` /
//! `statectl cancel`: a Unix socket, `control.sock`, in the job's folder.
//!
//! One request per connection, one line each way:
//!
//! ```text
//! request   "status" | "savepoint\t<target folder>" | "cancel" | "cancel\t<savepoint folder>"
//! reply     "ok\t<text>" | "error\t<message>"
//! ```
//!
//! The job answers between two records, so a reply can take as long as a
//! savepoint does. A socket file left by a killed job is detected (nothing
//! accepts on it) and replaced by the next job in that folder.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

/// The socket's file name in the job folder.
pub const SOCKET_NAME: &str = "control.sock";

/// What a client asks of the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Where the job is.
    Status,
    /// Take a savepoint under `target`.
    Savepoint {
        /// The folder the savepoint folder is created in.
        target: PathBuf,
    },
    /// Stop, after a savepoint under `savepoint` when given.
    Cancel {
        /// The folder the savepoint folder is created in.
        savepoint: Option<PathBuf>,
    },
}

impl Request {
    fn encode(&self) -> Result<String, ControlError> {
        let path = |p: &Path| {
            p.to_str()
                .filter(|s| !s.contains(['\n', '\t']))
                .map(str::to_owned)
                .ok_or_else(|| ControlError::BadPath(p.to_path_buf()))
        };
        Ok(match self {
            Request::Status => "status".into(),
            Request::Savepoint { target } => format!("savepoint\t{}", path(target)?),
            Request::Cancel { savepoint: None } => "cancel".into(),
            Request::Cancel {
                savepoint: Some(dir),
            } => format!("cancel\t{}", path(dir)?),
        })
    }

    fn parse(line: &str) -> Option<Self> {
        let mut parts = line.splitn(2, '\t');
        let verb = parts.next()?;
        let arg = parts.next().map(PathBuf::from);
        match (verb, arg) {
            ("status", None) => Some(Request::Status),
            ("savepoint", Some(target)) => Some(Request::Savepoint { target }),
            ("cancel", savepoint) => Some(Request::Cancel { savepoint }),
            _ => None,
        }
    }
}

/// A request received by the job, with the way to answer it.
#[derive(Debug)]
pub struct Command {
    /// The request.
    pub request: Request,
    reply: Sender<Result<String, String>>,
    written: Receiver<()>,
}

impl Command {
    /// Answers the client, and waits (at most 5 s) until the answer is
    /// written to its socket, so that a job that stops right after
    /// answering does not cut the answer off. A client that went away
    /// changes nothing.
    pub fn reply(self, answer: Result<String, String>) {
        if self.reply.send(answer).is_ok() {
            let _ = self.written.recv_timeout(Duration::from_secs(5));
        }
    }
}

/// Why a control request failed.
#[derive(Debug)]
pub enum ControlError {
    /// No socket: no job runs in that folder, or it is not a job folder.
    NoJob(PathBuf),
    /// The socket exists but nothing answers: the job's process is gone.
    NotAnswering(PathBuf, String),
    /// The job did not reply in time.
    Timeout(PathBuf, Duration),
    /// The job replied with an error.
    Refused(String),
    /// The path cannot be sent over the channel.
    BadPath(PathBuf),
    /// The socket already serves a running job.
    AlreadyRunning(PathBuf),
    /// Another I/O error.
    Io(String, std::io::Error),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::NoJob(dir) => write!(
                f,
                "no job runs in {} (no {SOCKET_NAME}; is it the folder `statectl run` printed?)",
                dir.display()
            ),
            ControlError::NotAnswering(dir, why) => write!(
                f,
                "the job in {} does not answer ({why}); its process has probably stopped",
                dir.display()
            ),
            ControlError::Timeout(dir, after) => write!(
                f,
                "the job in {} did not answer within {} s",
                dir.display(),
                after.as_secs()
            ),
            ControlError::Refused(why) => write!(f, "the job refused: {why}"),
            ControlError::BadPath(p) => write!(
                f,
                "{} cannot be passed to the job (not UTF-8, or holds a tab or newline)",
                p.display()
            ),
            ControlError::AlreadyRunning(dir) => {
                write!(f, "a job is already running in {}", dir.display())
            }
            ControlError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// The job's end of the channel: accepts connections on a thread and hands
/// each request to the job's loop. The socket file is removed on drop.
pub struct ControlServer {
    path: PathBuf,
    commands: Receiver<Command>,
}

impl ControlServer {
    /// Listens on `job_dir/control.sock`, replacing a socket left by a
    /// process that is gone; fails if a live job already listens there.
    pub fn start(job_dir: &Path) -> Result<Self, ControlError> {
        let path = job_dir.join(SOCKET_NAME);
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(ControlError::AlreadyRunning(job_dir.to_path_buf()));
            }
            std::fs::remove_file(&path)
                .map_err(|e| ControlError::Io(format!("removing {}", path.display()), e))?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| ControlError::Io(format!("listening on {}", path.display()), e))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("statectl-control".into())
            .spawn(move || accept_loop(listener, tx))
            .map_err(|e| ControlError::Io("starting the control thread".into(), e))?;
        Ok(ControlServer { path, commands: rx })
    }

    /// Where requests arrive.
    pub fn commands(&self) -> &Receiver<Command> {
        &self.commands
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, tx: Sender<Command>) {
    for stream in listener.incoming().flatten() {
        // A client that goes away early only loses its own answer.
        let _ = serve_one(stream, &tx);
    }
}

fn serve_one(stream: UnixStream, tx: &Sender<Command>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches('\n');
    let mut done = None;
    let answer = match Request::parse(line) {
        None => Err(format!("unknown request {line:?}")),
        Some(request) => {
            let (reply, answer) = mpsc::channel();
            let (written_tx, written) = mpsc::channel();
            done = Some(written_tx);
            if tx
                .send(Command {
                    request,
                    reply,
                    written,
                })
                .is_err()
            {
                Err("the job is stopping".to_string())
            } else {
                answer
                    .recv()
                    .unwrap_or_else(|_| Err("the job stopped before answering".to_string()))
            }
        }
    };
    let mut stream = stream;
    let text = match answer {
        Ok(t) => format!("ok\t{t}\n"),
        Err(e) => format!("error\t{}\n", e.replace('\n', " ")),
    };
    let written = stream.write_all(text.as_bytes());
    if let Some(done) = done {
        let _ = done.send(());
    }
    written
}

/// Sends `request` to the job in `job_dir` and waits up to `timeout` for its
/// answer.
pub fn send(job_dir: &Path, request: &Request, timeout: Duration) -> Result<String, ControlError> {
    let path = job_dir.join(SOCKET_NAME);
    let line = request.encode()?;
    if !path.exists() {
        return Err(ControlError::NoJob(job_dir.to_path_buf()));
    }
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| ControlError::NotAnswering(job_dir.to_path_buf(), e.to_string()))?;
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |e| ControlError::Io(what, e)
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("configuring"))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io("writing to"))?;
    let mut reply = String::new();
    match BufReader::new(&stream).read_line(&mut reply) {
        Ok(0) => {
            return Err(ControlError::NotAnswering(
                job_dir.to_path_buf(),
                "it closed the connection".into(),
            ))
        }
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(ControlError::Timeout(job_dir.to_path_buf(), timeout))
        }
        Err(e) => return Err(io("reading from")(e)),
    }
    let reply = reply.trim_end_matches('\n');
    match reply.split_once('\t') {
        Some(("ok", text)) => Ok(text.to_string()),
        Some(("error", why)) => Err(ControlError::Refused(why.to_string())),
        _ => Err(ControlError::NotAnswering(
            job_dir.to_path_buf(),
            format!("unexpected reply {reply:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status,
            Request::Savepoint {
                target: "/tmp/a b".into(),
            },
            Request::Cancel { savepoint: None },
            Request::Cancel {
                savepoint: Some("/x".into()),
            },
        ] {
            let line = r.encode().expect("encodes");
            assert_eq!(Request::parse(&line), Some(r));
        }
        assert_eq!(Request::parse("savepoint"), None);
        assert_eq!(Request::parse("launch"), None);
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A socket file with nothing behind it, as a killed job leaves.
        drop(UnixListener::bind(dir.path().join(SOCKET_NAME)).expect("bind"));
        let err =
            send(dir.path(), &Request::Status, Duration::from_secs(1)).expect_err("nobody answers");
        assert!(matches!(err, ControlError::NotAnswering(..)), "{err}");
        let server = ControlServer::start(dir.path()).expect("replaces the stale socket");
        assert!(matches!(
            ControlServer::start(dir.path()),
            Err(ControlError::AlreadyRunning(_))
        ));
        let job = std::thread::spawn(move || {
            let command = server.commands().recv().expect("a request");
            assert_eq!(command.request, Request::Status);
            command.reply(Ok("running".into()));
            server
        });
        let answer = send(dir.path(), &Request::Status, Duration::from_secs(5)).expect("answer");
        assert_eq!(answer, "running");
        drop(job.join().expect("job thread"));
        assert!(!dir.path().join(SOCKET_NAME).exists(), "removed on drop");
        assert!(matches!(
            send(dir.path(), &Request::Status, Duration::from_secs(1)),
            Err(ControlError::NoJob(_))
        ));
    }
}
