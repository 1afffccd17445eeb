//! Writes the seed corpora `fuzz/seeds/<target>/` and replays every seed
//! through its target's check.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --bin seeds            # write, then replay
//! cargo run --manifest-path fuzz/Cargo.toml --bin seeds -- --check # replay only
//! ```
//!
//! Replaying runs the committed crash inputs too, so it is also a quick
//! regression check on stable, without libFuzzer.

use std::path::Path;

use flowstate_fuzz::{seeds, TARGETS};

fn main() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds_dir = fuzz_dir.join("seeds");
    let write = !std::env::args().any(|a| a == "--check");
    if write {
        let generated = seeds::generate(&fuzz_dir.join("../testdata"));
        seeds::check_coverage(&generated);
        for s in &generated {
            let dir = seeds_dir.join(s.target);
            std::fs::create_dir_all(&dir).expect("create the seed folder");
            std::fs::write(dir.join(&s.name), &s.bytes).expect("write a seed");
        }
        println!("wrote {} seeds", generated.len());
    }
    for target in TARGETS {
        let dir = seeds_dir.join(target.name);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("read the seed folder").path())
            .collect();
        entries.sort();
        for path in &entries {
            let bytes = std::fs::read(path).expect("read a seed");
            (target.check)(&bytes);
        }
        println!("{:<14} {} seeds replayed", target.name, entries.len());
    }
}
