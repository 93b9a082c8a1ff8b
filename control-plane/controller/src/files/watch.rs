//! Watching the files: reload and re-translate on every change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch;
use tracing::{debug, error, info, info_span, warn};

use super::FileSource;
use crate::error::{Error, Result};
use crate::snapshot::{Settings, Snapshot};

/// How long to collect file events after the first one before reloading: an editor's save
/// or a `kubectl cp` of many files is a burst of events, and gives one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

enum Message {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// Publishes a [`Snapshot`] of a [`FileSource`], and a new one whenever the files change.
///
/// The first snapshot (generation 1) is loaded by [`FileWatcher::start`]. After that, file
/// events are collected for [`DEBOUNCE`] after the first one, then the files are reloaded and
/// re-translated on a thread of the watcher's own. A reload that gives the same objects and
/// diagnostics publishes nothing; one that gives the same objects with other diagnostics
/// publishes a snapshot with the previous translation.
///
/// Dropping the watcher stops it.
pub struct FileWatcher {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    control: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
    watcher: Option<RecommendedWatcher>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("generation", &self.snapshots.borrow().generation)
            .finish_non_exhaustive()
    }
}

impl FileWatcher {
    /// Starts watching the source's paths, loads and translates them once, and publishes
    /// that as the first snapshot.
    pub fn start(source: FileSource, settings: Settings) -> Result<Self> {
        let (control, events) = mpsc::channel();
        let to_reloader = control.clone();
        let mut watcher = notify::recommended_watcher(move |event| {
            // Fails only once the reloader is gone, when nobody needs the event.
            let _ = to_reloader.send(Message::Fs(event));
        })
        .map_err(|error| Error::Watch {
            path: source.roots().first().cloned().unwrap_or_default(),
            error,
        })?;
        // Watch before the first load, so that no change between the two is missed.
        for root in source.roots() {
            let (path, mode) = watch_target(root);
            watcher
                .watch(&path, mode)
                .map_err(|error| Error::Watch { path, error })?;
        }

        let mut reloader = Reloader {
            source,
            settings,
            sender: None,
        };
        let first = {
            let _span = info_span!("reload", generation = 1).entered();
            let snapshot = Snapshot::translate(1, reloader.source.load(), &reloader.settings);
            info!(
                objects = object_count(&snapshot),
                diagnostics = snapshot.diagnostics.len(),
                "loaded"
            );
            snapshot
        };
        let (sender, snapshots) = watch::channel(Arc::new(first));
        reloader.sender = Some(sender);
        let thread = std::thread::Builder::new()
            .name("lanyard-files".to_string())
            .spawn(move || reloader.run(&events))
            .map_err(Error::Thread)?;
        Ok(Self {
            snapshots,
            control,
            thread: Some(thread),
            watcher: Some(watcher),
        })
    }

    /// A receiver of every snapshot published from now on; it holds the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Stops watching and waits for a reload in progress to finish.
    pub fn stop(mut self) {
        self.shut_down();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn shut_down(&mut self) {
        self.watcher = None;
        let _ = self.control.send(Message::Stop);
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// What to hand to the OS watcher: a directory recursively; for a file its directory, since
/// editors and ConfigMap updates replace a file rather than write it in place.
fn watch_target(root: &Path) -> (PathBuf, RecursiveMode) {
    if root.is_dir() {
        return (root.to_path_buf(), RecursiveMode::Recursive);
    }
    let parent = root
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    (parent.to_path_buf(), RecursiveMode::NonRecursive)
}

/// Whether an event may mean changed content. Opening and reading files (which the reload
/// itself does) does not.
fn is_change(event: &notify::Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn object_count(snapshot: &Snapshot) -> usize {
    let o = &snapshot.objects;
    o.namespaces.len()
        + o.services.len()
        + o.endpoint_slices.len()
        + o.pods.len()
        + o.http_routes.len()
        + o.grpc_routes.len()
        + o.reference_grants.len()
        + o.traffic_splits.len()
        + o.http_route_groups.len()
        + o.tcp_routes.len()
}

struct Reloader {
    source: FileSource,
    settings: Settings,
    sender: Option<watch::Sender<Arc<Snapshot>>>,
}

impl Reloader {
    fn run(mut self, events: &mpsc::Receiver<Message>) {
        while next_burst(events) {
            // A bug in a translator must not end the watching: the previous snapshot stays,
            // and the next change is tried again.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reload())).is_err() {
                error!("reload panicked: keeping the previous snapshot");
            }
        }
        debug!("stopped watching files");
    }

    fn reload(&mut self) {
        let Some(sender) = &self.sender else {
            return;
        };
        let current = sender.borrow().clone();
        let generation = current.generation + 1;
        let _span = info_span!("reload", generation).entered();
        let loaded = self.source.load();
        let same_objects = loaded.objects == current.objects;
        if same_objects && loaded.diagnostics == current.diagnostics {
            debug!(files = loaded.files, "no change");
            return;
        }
        let snapshot = if same_objects {
            current.with_diagnostics(loaded)
        } else {
            current.next(loaded, &self.settings)
        };
        info!(
            objects = object_count(&snapshot),
            diagnostics = snapshot.diagnostics.len(),
            "reloaded"
        );
        sender.send_replace(Arc::new(snapshot));
    }
}

/// Waits for a change, then collects the events that follow it for [`DEBOUNCE`].
/// `false` when the watcher stops.
fn next_burst(events: &mpsc::Receiver<Message>) -> bool {
    loop {
        let Ok(message) = events.recv() else {
            return false;
        };
        match message {
            Message::Stop => return false,
            Message::Fs(Ok(event)) if !is_change(&event) => continue,
            Message::Fs(Ok(_)) => break,
            Message::Fs(Err(e)) => {
                // Lost events (a queue overflow, say): a reload catches up with them.
                warn!(error = %e, "file watch error, reloading");
                break;
            }
        }
    }
    let deadline = Instant::now() + DEBOUNCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match events.recv_timeout(left) {
            Ok(Message::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            Ok(Message::Fs(Err(e))) => warn!(error = %e, "file watch error"),
            Ok(Message::Fs(Ok(_))) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lanyard_index::{Kind, ObjectKey, ObjectRef};
    use notify::event::{CreateKind, ModifyKind};

    use super::*;

    /// How long a change may take to show up in a snapshot.
    /// A bound, not a performance claim: generous so that a loaded machine does not fail it.
    const WAIT: Duration = Duration::from_secs(10);

    fn mk_service(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{ports: [{{port: 80}}]}}\n"
        )
    }

    fn service(name: &str) -> ObjectRef {
        ObjectRef {
            kind: Kind::Service,
            key: ObjectKey::new("ns", name),
        }
    }

    /// Waits (boundedly) for a snapshot that satisfies `f`.
    async fn wait_for(
        snapshots: &mut watch::Receiver<Arc<Snapshot>>,
        what: &str,
        f: impl FnMut(&Arc<Snapshot>) -> bool,
    ) -> Arc<Snapshot> {
        tokio::time::timeout(WAIT, snapshots.wait_for(f))
            .await
            .unwrap_or_else(|_| panic!("no snapshot with {what} within {WAIT:?}"))
            .expect("the watcher stopped")
            .clone()
    }

    /// Replaces a file in one step (write aside, rename over), so that no reload can see it
    /// half written.
    fn replace(file: &Path, text: &str) {
        let aside = file.with_extension("tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, file).unwrap();
    }

    fn errors_about(snapshot: &Snapshot, file: &Path) -> usize {
        snapshot
            .diagnostics
            .iter()
            .filter(|d| d.is_error() && d.file == file)
            .count()
    }

    #[tokio::test]
    async fn changes_are_published_and_a_broken_file_keeps_its_objects_until_fixed_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        let watcher =
            FileWatcher::start(FileSource::new([dir.path()]).unwrap(), Settings::default())
                .unwrap();
        let mut snapshots = watcher.subscribe();
        assert_eq!(snapshots.borrow_and_update().generation, 1);
        assert!(watcher.current().objects.services.is_empty());

        replace(&file, &mk_service("one"));
        let added = wait_for(&mut snapshots, "the new Service", |s| {
            s.objects.contains(&service("one"))
        })
        .await;
        assert!(added.generation > 1);
        assert_eq!(errors_about(&added, &file), 0);

        replace(&file, &format!("{}---\nkind: [broken\n", mk_service("two")));
        let broken = wait_for(&mut snapshots, "an error naming the file", |s| {
            errors_about(s, &file) > 0
        })
        .await;
        assert!(broken.objects.contains(&service("one")));
        assert!(!broken.objects.contains(&service("two")));

        replace(&file, &mk_service("two"));
        let fixed = wait_for(&mut snapshots, "the fixed file", |s| {
            s.objects.contains(&service("two"))
        })
        .await;
        assert_eq!(errors_about(&fixed, &file), 0);
        assert!(!fixed.objects.contains(&service("one")));

        std::fs::remove_file(&file).unwrap();
        let deleted = wait_for(&mut snapshots, "no Service", |s| {
            s.objects.services.is_empty()
        })
        .await;
        assert!(deleted.generation > fixed.generation);
        watcher.stop();
    }

    #[tokio::test]
    async fn a_single_file_is_watched_through_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("only.yaml");
        std::fs::write(&file, mk_service("one")).unwrap();
        let watcher =
            FileWatcher::start(FileSource::new([&file]).unwrap(), Settings::default()).unwrap();
        let mut snapshots = watcher.subscribe();
        assert!(
            snapshots
                .borrow_and_update()
                .objects
                .contains(&service("one"))
        );
        // Replaced by a rename, as editors and ConfigMap updates do.
        replace(&file, &mk_service("two"));
        wait_for(&mut snapshots, "the replaced file's Service", |s| {
            s.objects.contains(&service("two"))
        })
        .await;
    }

    fn mk_reloader(dir: &Path) -> (Reloader, watch::Receiver<Arc<Snapshot>>) {
        let mut source = FileSource::new([dir]).unwrap();
        let settings = Settings::default();
        let first = Snapshot::translate(1, source.load(), &settings);
        let (sender, receiver) = watch::channel(Arc::new(first));
        let reloader = Reloader {
            source,
            settings,
            sender: Some(sender),
        };
        (reloader, receiver)
    }

    #[test]
    fn a_reload_that_gives_the_same_objects_and_diagnostics_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), mk_service("one")).unwrap();
        let (mut reloader, mut snapshots) = mk_reloader(dir.path());
        snapshots.borrow_and_update();
        // Rewritten with the same content, and touched by an unrelated file.
        std::fs::write(dir.path().join("a.yaml"), mk_service("one")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        reloader.reload();
        assert!(!snapshots.has_changed().unwrap());
        assert_eq!(snapshots.borrow().generation, 1);

        std::fs::write(dir.path().join("b.yaml"), mk_service("two")).unwrap();
        reloader.reload();
        assert!(snapshots.has_changed().unwrap());
        let next = snapshots.borrow_and_update().clone();
        assert_eq!(next.generation, 2);
        assert!(next.objects.contains(&service("two")));
    }

    #[test]
    fn new_diagnostics_on_the_same_objects_are_published_with_the_same_translation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), mk_service("one")).unwrap();
        let (mut reloader, mut snapshots) = mk_reloader(dir.path());
        let first = snapshots.borrow_and_update().clone();
        std::fs::write(dir.path().join("a.yaml"), "kind: [broken\n").unwrap();
        reloader.reload();
        let next = snapshots.borrow_and_update().clone();
        assert_eq!(next.generation, 2);
        assert_eq!(next.objects, first.objects);
        assert_eq!(next.translation, first.translation);
        assert!(next.has_errors());
    }

    fn mk_event(kind: EventKind) -> Message {
        Message::Fs(Ok(notify::Event::new(kind)))
    }

    #[test]
    fn a_burst_of_events_gives_one_reload() {
        let (tx, rx) = mpsc::channel();
        for _ in 0..5 {
            tx.send(mk_event(EventKind::Modify(ModifyKind::Any)))
                .unwrap();
        }
        tx.send(mk_event(EventKind::Create(CreateKind::File)))
            .unwrap();
        assert!(next_burst(&rx));
        assert!(rx.try_recv().is_err(), "the burst was not collected");
    }

    #[test]
    fn reading_files_is_not_a_change_and_stop_ends_the_loop() {
        let (tx, rx) = mpsc::channel();
        tx.send(mk_event(EventKind::Access(AccessKind::Open(
            AccessMode::Any,
        ))))
        .unwrap();
        tx.send(mk_event(EventKind::Access(AccessKind::Close(
            AccessMode::Read,
        ))))
        .unwrap();
        tx.send(Message::Stop).unwrap();
        assert!(!next_burst(&rx));

        let (tx, rx) = mpsc::channel();
        tx.send(mk_event(EventKind::Access(AccessKind::Close(
            AccessMode::Write,
        ))))
        .unwrap();
        assert!(next_burst(&rx));
        drop(tx);
        assert!(!next_burst(&rx));
    }

    #[test]
    fn a_stop_during_a_burst_ends_the_loop() {
        let (tx, rx) = mpsc::channel();
        tx.send(mk_event(EventKind::Modify(ModifyKind::Any)))
            .unwrap();
        tx.send(Message::Stop).unwrap();
        assert!(!next_burst(&rx));
    }
}
