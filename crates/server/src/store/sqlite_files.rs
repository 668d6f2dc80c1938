//! The SQLite files under a running vault: are they still the files on disk, and can they be
//! written?
//!
//! SQLite keeps using the descriptors it opened, so a database file deleted or replaced under a
//! running vault keeps accepting commits into an inode nobody will ever open again: every token
//! acknowledged after that is gone at the next start. And on ext4 a file made immutable while
//! its shared-memory index is mapped kills the process with SIGBUS on the next write to the
//! mapping (the kernel refuses the page fault), which happens on writes and on some reads. So
//! the vault checks, without opening the files (closing another descriptor of a SQLite file
//! would drop SQLite's POSIX locks): their identity (device and inode) against the ones opened
//! at start, whether they may be written (`access(W_OK)`: read-only mounts and immutable files
//! say no), and the free space beside them.
//!
//! A background watch keeps [`SqliteFiles::reads_ok`] and [`SqliteFiles::writes_ok`] current;
//! every write also checks synchronously, before (writable) and after (identity: the commit
//! went into the file a restart will open). The identity after a write is asked of the
//! kernel's inotify ([`NameWatch`]: one `read`) and the files are looked up only when it
//! reports a change; what inotify cannot see (mounts) is the background watch's to find.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::name_watch::NameWatch;

/// Below this much free space writes are refused before SQLite fails halfway through one.
pub const MIN_FREE_BYTES: u64 = 8 * 1024 * 1024;

const WAL: &str = "the write-ahead log";

/// What is wrong with the files; each makes the store unavailable until it is put right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    #[error(
        "{0} was removed or replaced while the vault was running; restart it on the right files"
    )]
    Replaced(&'static str),
    #[error("{0} cannot be written (read-only file system, immutable file or permissions)")]
    NotWritable(&'static str),
    #[error("less than {} MiB free beside the database", MIN_FREE_BYTES / 1024 / 1024)]
    NoSpace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

struct WatchedFile {
    name: &'static str,
    path: PathBuf,
    opened: FileId,
}

pub struct SqliteFiles {
    files: Vec<WatchedFile>,
    reads_ok: AtomicBool,
    writes_ok: AtomicBool,
    /// The last problem seen, logged once when it appears.
    last_problem: Mutex<Option<FileProblem>>,
    names: Mutex<Names>,
}

/// What the identity check after a write goes by.
struct Names {
    /// `None` where the paths cannot be watched: every check looks the files up.
    watch: Option<NameWatch>,
    /// A change was reported and the files have not been found right since: every check
    /// looks them up until they are.
    suspect: bool,
}

impl SqliteFiles {
    /// Records the identity of the database file and, in WAL mode, its log and shared-memory
    /// index, as they are now (the store has them open).
    ///
    /// # Errors
    /// The database file cannot be read.
    pub fn record(database: &Path) -> std::io::Result<Self> {
        let paths = [
            ("the database file", database.to_path_buf()),
            (WAL, with_suffix(database, "-wal")),
            ("the shared-memory index", with_suffix(database, "-shm")),
        ];
        // Watched before the files are looked up: a change in between is reported.
        let watched: Vec<&Path> = paths.iter().map(|(_, path)| path.as_path()).collect();
        let watch = NameWatch::new(&watched)
            .inspect_err(|error| {
                tracing::info!(
                    %error,
                    "database files: their names cannot be watched; every write looks them up"
                );
            })
            .ok();
        let mut files = Vec::new();
        for (name, path) in paths {
            match std::fs::metadata(&path) {
                Ok(meta) => files.push(WatchedFile {
                    name,
                    path,
                    opened: FileId::of(&meta),
                }),
                // Only the database file itself must exist; the others exist in WAL mode.
                Err(e) if files.is_empty() => return Err(e),
                Err(_) => {}
            }
        }
        Ok(Self {
            files,
            reads_ok: AtomicBool::new(true),
            writes_ok: AtomicBool::new(true),
            last_problem: Mutex::new(None),
            names: Mutex::new(Names {
                watch,
                suspect: false,
            }),
        })
    }

    /// The files as the last check found them, good enough to read from.
    pub fn reads_ok(&self) -> bool {
        self.reads_ok.load(Ordering::Acquire)
    }

    /// The files as the last check found them, good enough to write to.
    pub fn writes_ok(&self) -> bool {
        self.writes_ok.load(Ordering::Acquire)
    }

    /// Checks every file now and updates the flags.
    ///
    /// # Errors
    /// The first [`FileProblem`] found.
    pub fn check(&self) -> Result<(), FileProblem> {
        let result = self.check_identity().and_then(|()| self.check_writable());
        let reads_ok = result.is_ok();
        let result = result.and_then(|()| self.check_space());
        self.reads_ok.store(reads_ok, Ordering::Release);
        self.writes_ok.store(result.is_ok(), Ordering::Release);
        self.note(result);
        result
    }

    /// Before a read: the last check found the files readable (no I/O).
    ///
    /// # Errors
    /// The problem the last check found.
    pub fn before_read(&self) -> Result<(), FileProblem> {
        if self.reads_ok() {
            Ok(())
        } else {
            Err(self.current_problem())
        }
    }

    /// The size of the write-ahead log now (0 when there is none).
    pub fn wal_bytes(&self) -> u64 {
        self.files
            .iter()
            .find(|f| f.name == WAL)
            .and_then(|f| std::fs::metadata(&f.path).ok())
            .map_or(0, |m| m.len())
    }

    /// Before a write: the files may be written (cheap: no I/O beyond `access`).
    ///
    /// # Errors
    /// [`FileProblem::NotWritable`], or the problem the watch last found.
    pub fn before_write(&self) -> Result<(), FileProblem> {
        if !self.writes_ok() {
            return Err(self.current_problem());
        }
        self.check_writable().inspect_err(|p| self.fail(*p))
    }

    /// After a write: it went into the files a restart will open.
    ///
    /// # Errors
    /// [`FileProblem::Replaced`]: the write may be lost.
    pub fn after_write(&self) -> Result<(), FileProblem> {
        self.identity_after_write().inspect_err(|p| self.fail(*p))
    }

    /// The files' identity, looked up only when a name on the way changed since the last
    /// look (or could not be watched). One check at a time: a check that drained the report
    /// of a change leaves `suspect` for the ones after it.
    fn identity_after_write(&self) -> Result<(), FileProblem> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let Names { watch, suspect } = &mut *names;
        let Some(watch) = watch else {
            return self.check_identity();
        };
        if !watch.changed() && !*suspect {
            return Ok(());
        }
        // The directories now on the way are watched before the files are looked up, so a
        // change after the look is reported to the next check.
        let rewatched = watch.rewatch();
        let identity = self.check_identity();
        *suspect = rewatched.is_err() || identity.is_err();
        identity
    }

    fn check_identity(&self) -> Result<(), FileProblem> {
        for file in &self.files {
            match std::fs::metadata(&file.path) {
                Ok(meta) if FileId::of(&meta) == file.opened => {}
                _ => return Err(FileProblem::Replaced(file.name)),
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), FileProblem> {
        for file in &self.files {
            if rustix::fs::access(&file.path, rustix::fs::Access::WRITE_OK).is_err() {
                return Err(FileProblem::NotWritable(file.name));
            }
        }
        Ok(())
    }

    fn check_space(&self) -> Result<(), FileProblem> {
        let Some(database) = self.files.first() else {
            return Ok(());
        };
        match rustix::fs::statvfs(&database.path) {
            Ok(stats) if stats.f_bavail.saturating_mul(stats.f_frsize) < MIN_FREE_BYTES => {
                Err(FileProblem::NoSpace)
            }
            // A file system that cannot say is not held against the vault.
            _ => Ok(()),
        }
    }

    fn fail(&self, problem: FileProblem) {
        if !matches!(problem, FileProblem::NoSpace) {
            self.reads_ok.store(false, Ordering::Release);
        }
        self.writes_ok.store(false, Ordering::Release);
        self.note(Err(problem));
    }

    fn current_problem(&self) -> FileProblem {
        self.lock()
            .unwrap_or(FileProblem::Replaced("the database file"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<FileProblem>> {
        self.last_problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a problem when it appears and when it clears, not on every check.
    fn note(&self, result: Result<(), FileProblem>) {
        let mut last = self.lock();
        let now = result.err();
        if *last != now {
            match now {
                Some(problem) => tracing::error!(%problem, "database files: refusing requests"),
                None => tracing::warn!("database files: the problem is gone, serving again"),
            }
            *last = now;
        }
    }
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            device: meta.dev(),
            inode: meta.ino(),
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_or_removed_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        std::fs::write(&db, b"x").unwrap();
        std::fs::write(with_suffix(&db, "-wal"), b"x").unwrap();
        let files = SqliteFiles::record(&db).unwrap();
        // Held open, as SQLite holds them, so their inodes are not reused for the new files.
        let _held = [
            std::fs::File::open(&db).unwrap(),
            std::fs::File::open(with_suffix(&db, "-wal")).unwrap(),
        ];
        assert_eq!(files.check(), Ok(()));
        assert!(files.reads_ok() && files.writes_ok());

        std::fs::remove_file(with_suffix(&db, "-wal")).unwrap();
        assert_eq!(
            files.after_write(),
            Err(FileProblem::Replaced("the write-ahead log"))
        );
        assert!(!files.reads_ok() && !files.writes_ok());

        std::fs::write(with_suffix(&db, "-wal"), b"x").unwrap();
        assert_eq!(
            files.check(),
            Err(FileProblem::Replaced("the write-ahead log")),
            "a new file of the same name is not the one SQLite has open"
        );
        std::fs::remove_file(&db).unwrap();
        std::fs::write(&db, b"x").unwrap();
        assert_eq!(
            files.check(),
            Err(FileProblem::Replaced("the database file"))
        );
        assert!(files.before_write().is_err() && files.before_read().is_err());
    }

    /// `v.db` and `v.db-wal` in `dir`, recorded, and held open as SQLite holds them (so their
    /// inodes are not reused for new files).
    fn recorded(db: &Path) -> (SqliteFiles, [std::fs::File; 2]) {
        std::fs::write(db, b"x").unwrap();
        std::fs::write(with_suffix(db, "-wal"), b"x").unwrap();
        let files = SqliteFiles::record(db).unwrap();
        let held = [
            std::fs::File::open(db).unwrap(),
            std::fs::File::open(with_suffix(db, "-wal")).unwrap(),
        ];
        (files, held)
    }

    #[test]
    fn every_write_after_a_replacement_is_refused_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let (files, _held) = recorded(&db);
        assert!(
            files.names.lock().unwrap().watch.is_some(),
            "inotify watches"
        );
        assert_eq!(files.after_write(), Ok(()));
        std::fs::write(dir.path().join("unrelated"), b"x").unwrap();
        std::fs::remove_file(dir.path().join("unrelated")).unwrap();
        assert_eq!(files.after_write(), Ok(()), "other names are no change");

        std::fs::write(dir.path().join("new"), b"y").unwrap();
        std::fs::rename(dir.path().join("new"), with_suffix(&db, "-wal")).unwrap();
        for _ in 0..3 {
            assert_eq!(
                files.after_write(),
                Err(FileProblem::Replaced("the write-ahead log"))
            );
        }
    }

    #[test]
    fn a_path_inotify_cannot_follow_is_looked_up_at_every_write() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let db = dir.path().join("sub").join("..").join("v.db");
        let (files, _held) = recorded(&db);
        assert!(files.names.lock().unwrap().watch.is_none());
        assert_eq!(files.after_write(), Ok(()));
        std::fs::remove_file(&db).unwrap();
        assert_eq!(
            files.after_write(),
            Err(FileProblem::Replaced("the database file"))
        );
    }
}
