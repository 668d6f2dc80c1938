//! Whether any name on the way to a set of files changed — a file removed, renamed or replaced,
//! a directory on its path moved or removed — told by the kernel's inotify in one `read`, where
//! looking the files up again costs a path walk and a `statx` each.
//!
//! The kernel queues an event inside the call that changes a name (`unlink`, `rename`,
//! `rmdir`...), before that call returns; so a look after a commit sees every such change that
//! ended before the commit did, as looking the paths up would. Watched: every directory on each
//! file's path, for entries of the next name on the way (or the file's own name) and for itself
//! being moved or removed. Not seen by inotify: a mount over a directory or file on the way, and
//! the target of a symbolic link on the way being moved. `sqlite_files` leaves those to its
//! periodic full check; the files a mount covers are still on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fd::OwnedFd;
use rustix::fs::inotify::{self, CreateFlags, Event, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// Entries of a watched directory appearing or going, and the directory itself going.
const WATCHED: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);

/// Events read per `read`: enough for a few dozen with names.
const READ_BUFFER: usize = 4096;

pub struct NameWatch {
    inotify: OwnedFd,
    /// The directories on the way, with the entry names in each that lead to the files.
    ways: BTreeMap<PathBuf, BTreeSet<OsString>>,
    /// Per watch descriptor, the names that matter in its directory.
    names: HashMap<i32, BTreeSet<OsString>>,
}

impl NameWatch {
    /// Watches the names on the way to `files`, as the paths are written (not canonicalized).
    ///
    /// # Errors
    /// No inotify instance could be had, a directory cannot be watched, or a path goes up
    /// (`..`) on the way, which would make "the next name" ambiguous.
    pub fn new(files: &[&Path]) -> std::io::Result<Self> {
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let mut ways: BTreeMap<PathBuf, BTreeSet<OsString>> = BTreeMap::new();
        for file in files {
            for (dir, name) in steps(file)? {
                ways.entry(dir).or_default().insert(name);
            }
        }
        let mut watch = Self {
            inotify,
            ways,
            names: HashMap::new(),
        };
        watch.rewatch()?;
        Ok(watch)
    }

    /// Watches the directories now on the way (after a change, they may be others than
    /// before). Watches of directories no longer on the way stay, and at worst report a change
    /// that a full check then clears.
    ///
    /// # Errors
    /// A directory on the way cannot be watched (it is gone, or no watch is left).
    pub fn rewatch(&mut self) -> std::io::Result<()> {
        for (dir, names) in &self.ways {
            let descriptor = inotify::add_watch(&self.inotify, dir.as_path(), WATCHED)?;
            self.names
                .entry(descriptor)
                .or_default()
                .extend(names.iter().cloned());
        }
        Ok(())
    }

    /// Whether a name on the way changed since the last call. A lost event (the kernel's queue
    /// overflowed) or a failed read counts as a change.
    pub fn changed(&self) -> bool {
        let mut buffer = [MaybeUninit::<u8>::uninit(); READ_BUFFER];
        let mut events = inotify::Reader::new(&self.inotify, &mut buffer);
        let mut changed = false;
        loop {
            match events.next() {
                Ok(event) => changed |= self.matters(&event),
                Err(Errno::AGAIN) => return changed,
                Err(Errno::INTR) => {}
                Err(_) => return true,
            }
        }
    }

    fn matters(&self, event: &Event<'_>) -> bool {
        if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
            return true;
        }
        match event.file_name() {
            // An entry of a watched directory: only the names on the way matter.
            Some(name) => self
                .names
                .get(&event.wd())
                .is_some_and(|names| names.contains(OsStr::from_bytes(name.to_bytes()))),
            // The directory itself moved, removed, unmounted, or its watch dropped.
            None => true,
        }
    }
}

/// Each directory on `file`'s path with the name of the next step in it.
fn steps(file: &Path) -> std::io::Result<Vec<(PathBuf, OsString)>> {
    let mut dir = PathBuf::from(if file.is_absolute() { "/" } else { "." });
    let mut steps = Vec::new();
    for component in file.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => {
                steps.push((dir.clone(), name.to_owned()));
                dir.push(name);
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a path that goes up (..) is looked up again instead",
                ));
            }
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        _root: tempfile::TempDir,
        top: PathBuf,
        dir: PathBuf,
        files: Vec<PathBuf>,
    }

    /// `top/dir/{v.db, v.db-wal}`, watched.
    fn tree() -> (Tree, NameWatch) {
        let root = tempfile::tempdir().unwrap();
        let top = root.path().join("top");
        let dir = top.join("dir");
        std::fs::create_dir_all(&dir).unwrap();
        let files = vec![dir.join("v.db"), dir.join("v.db-wal")];
        for file in &files {
            std::fs::write(file, b"x").unwrap();
        }
        let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let watch = NameWatch::new(&paths).unwrap();
        let tree = Tree {
            _root: root,
            top,
            dir,
            files,
        };
        (tree, watch)
    }

    #[test]
    fn writes_and_other_names_beside_the_files_are_no_change() {
        let (tree, watch) = tree();
        assert!(!watch.changed());
        std::fs::write(&tree.files[0], b"more").unwrap();
        std::fs::write(tree.dir.join("other"), b"x").unwrap();
        std::fs::rename(tree.dir.join("other"), tree.dir.join("another")).unwrap();
        std::fs::remove_file(tree.dir.join("another")).unwrap();
        std::fs::create_dir(tree.top.join("sibling")).unwrap();
        assert!(!watch.changed(), "nothing on the way to the files changed");
    }

    #[test]
    fn every_way_a_file_can_lose_its_name_is_a_change() {
        type Change = fn(&Tree);
        let changes: [(&str, Change); 6] = [
            ("removed", |t| std::fs::remove_file(&t.files[1]).unwrap()),
            ("renamed away", |t| {
                std::fs::rename(&t.files[0], t.dir.join("moved")).unwrap();
            }),
            ("replaced by a rename over it", |t| {
                std::fs::write(t.dir.join("new"), b"y").unwrap();
                std::fs::rename(t.dir.join("new"), &t.files[1]).unwrap();
            }),
            ("its directory renamed", |t| {
                std::fs::rename(&t.dir, t.top.join("elsewhere")).unwrap();
            }),
            (
                "a directory above renamed and another put in its place",
                |t| {
                    let aside = t.top.with_extension("aside");
                    std::fs::rename(&t.top, aside).unwrap();
                    std::fs::create_dir_all(&t.dir).unwrap();
                },
            ),
            ("its directory removed", |t| {
                std::fs::remove_dir_all(&t.dir).unwrap();
            }),
        ];
        for (what, change) in changes {
            let (tree, watch) = tree();
            assert!(!watch.changed(), "{what}: nothing yet");
            change(&tree);
            assert!(watch.changed(), "{what}: seen");
            assert!(!watch.changed(), "{what}: told once");
        }
    }

    #[test]
    fn after_a_change_the_directories_now_on_the_way_are_watched() {
        let (tree, mut watch) = tree();
        // A new directory put on the way, holding the same files.
        let fresh = tree.top.join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        for file in &tree.files {
            std::fs::hard_link(file, fresh.join(file.file_name().unwrap())).unwrap();
        }
        std::fs::rename(&tree.dir, tree.top.join("old")).unwrap();
        std::fs::rename(&fresh, &tree.dir).unwrap();
        assert!(watch.changed());
        watch.rewatch().unwrap();
        std::fs::remove_file(&tree.files[0]).unwrap();
        assert!(watch.changed(), "the new directory's entries are watched");
    }

    #[test]
    fn a_path_that_goes_up_is_not_watched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a").join("..").join("v.db");
        assert!(NameWatch::new(&[file.as_path()]).is_err());
    }
}
