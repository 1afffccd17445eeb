//! The checkpoint directory layout, a documented public format:
//!
//! ```text
//! <checkpoint-dir>/<job-id>/
//!     shared/        files several checkpoints may reference (incremental pieces)
//!     taskowned/     files owned by the tasks, never deleted by the coordinator
//!     chk-<N>/       exclusive files of checkpoint N and its _metadata
//! <savepoint-dir>/savepoint-<job6>-<random>/_metadata (+ its files)
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use state_api::error::{Error, Result};

/// Name of the metadata file of a checkpoint or savepoint.
pub const METADATA_FILE: &str = "_metadata";
/// Folder of shared files.
pub const SHARED_DIR: &str = "shared";
/// Folder of task-owned files.
pub const TASK_OWNED_DIR: &str = "taskowned";
/// Prefix of checkpoint folders.
pub const CHECKPOINT_DIR_PREFIX: &str = "chk-";
/// Prefix of savepoint folders.
pub const SAVEPOINT_DIR_PREFIX: &str = "savepoint-";

/// The paths of one job's checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobLayout {
    job_id: String,
    job_dir: PathBuf,
}

impl JobLayout {
    /// The layout of job `job_id` under `checkpoint_dir`. A job id is 1 to 128
    /// characters of ASCII letters, digits, `-` and `_`.
    pub fn new(checkpoint_dir: &Path, job_id: &str) -> Result<Self> {
        check_job_id(job_id)?;
        Ok(JobLayout {
            job_id: job_id.to_string(),
            job_dir: checkpoint_dir.join(job_id),
        })
    }

    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// `<checkpoint-dir>/<job-id>`.
    pub fn job_dir(&self) -> &Path {
        &self.job_dir
    }

    /// `<job>/shared`.
    pub fn shared_dir(&self) -> PathBuf {
        self.job_dir.join(SHARED_DIR)
    }

    /// `<job>/taskowned`.
    pub fn task_owned_dir(&self) -> PathBuf {
        self.job_dir.join(TASK_OWNED_DIR)
    }

    /// `<job>/chk-<id>`.
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.job_dir.join(format!("{CHECKPOINT_DIR_PREFIX}{id}"))
    }

    /// `<job>/chk-<id>/_metadata`.
    pub fn metadata_path(&self, id: u64) -> PathBuf {
        self.checkpoint_dir(id).join(METADATA_FILE)
    }

    /// A new savepoint folder under `savepoint_dir`:
    /// `savepoint-<first 6 characters of the job id>-<12 random hex digits>`.
    pub fn new_savepoint_dir(&self, savepoint_dir: &Path) -> PathBuf {
        let job6: String = self.job_id.chars().take(6).collect();
        savepoint_dir.join(format!(
            "{SAVEPOINT_DIR_PREFIX}{job6}-{:012x}",
            random_u128() & 0xffff_ffff_ffff
        ))
    }
}

/// The checkpoint id of a `chk-<N>` folder name.
pub fn parse_checkpoint_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_DIR_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn check_job_id(job_id: &str) -> Result<()> {
    let ok = !job_id.is_empty()
        && job_id.len() <= 128
        && job_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: format!("job id {job_id:?}: use 1 to 128 ASCII letters, digits, '-' or '_'"),
        })
    }
}

/// 128 random bits from the operating system's random source, so names in
/// a shared folder never collide, whichever machine or process made them.
/// Should the source fail (it does not on supported systems), the bits come
/// from the time, the process id and a process-wide counter instead.
pub fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        return u128::from_le_bytes(bytes);
    }
    (u128::from(mixed_u64()) << 64) | u128::from(mixed_u64())
}

/// The fallback of [`random_u128`]: time, process id and a counter, mixed.
fn mixed_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A unique file name for a state file: 32 hex digits of [`random_u128`].
pub fn unique_file_name() -> String {
    format!("{:032x}", random_u128())
}

/// A moment in UTC, split into calendar fields (for showing checkpoint
/// times without a date-time dependency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    /// The year (proleptic Gregorian calendar).
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
}

impl UtcTime {
    /// `secs` seconds after the Unix epoch (Howard Hinnant's days-to-civil
    /// algorithm).
    pub fn from_unix_secs(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rem = (secs % 86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let l = JobLayout::new(Path::new("/c"), "job-1").expect("valid");
        assert_eq!(l.metadata_path(7), Path::new("/c/job-1/chk-7/_metadata"));
        assert_eq!(parse_checkpoint_dir_name("chk-42"), Some(42));
        assert_eq!(parse_checkpoint_dir_name("chk-"), None);
        assert_eq!(parse_checkpoint_dir_name("chk-4x"), None);
        assert_eq!(parse_checkpoint_dir_name("shared"), None);
        let a = unique_file_name();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        let names: std::collections::HashSet<String> =
            (0..10_000).map(|_| unique_file_name()).collect();
        assert_eq!(names.len(), 10_000, "names never repeat");
        assert!(JobLayout::new(Path::new("/c"), "../x").is_err());
        assert!(JobLayout::new(Path::new("/c"), "").is_err());
        let sp = l.new_savepoint_dir(Path::new("/s"));
        let name = sp.file_name().and_then(|n| n.to_str()).expect("utf-8");
        assert!(
            name.starts_with("savepoint-job-1-") && name.len() == "savepoint-job-1-".len() + 12,
            "{name}"
        );
        assert_ne!(unique_file_name(), unique_file_name());
    }
}
