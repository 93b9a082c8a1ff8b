//! The file-backed source: manifests on disk in, [`Objects`] and diagnostics out.
//!
//! [`FileSource`] reads every `*.yaml` and `*.yml` file under its paths (directories are
//! walked recursively; a path naming a file is read whatever its extension). Files and
//! directories whose name starts with `.` are skipped: they are editors' swap files, or the
//! `..data` / `..2024_…` copies Kubernetes makes when a ConfigMap is mounted as a directory.
//! Files are always read in sorted path order, so a load is deterministic.
//!
//! Each file may hold several YAML documents separated by `---`. Every document goes
//! through [`lanyard_index::parse_value`] with the default namespace `default`, as
//! `kubectl apply` would. The rules:
//!
//! - A file that cannot be read or is not valid YAML, and a document that is not a valid
//!   object, are **errors** naming the file and the document (and the object, when its kind
//!   and name can be read).
//! - An object of a kind Lanyard ships a CRD for (HTTPRoute, GRPCRoute, ReferenceGrant, the
//!   SMI kinds) first gets the CRD's defaults and is checked against its schema and CEL rules
//!   ([`lanyard_schema`]), as the API server would before anyone could read it. One the API
//!   server would refuse is an **error** with the API server's message, and is not used.
//! - A kind Lanyard does not know is a **warning** naming the file and the kind; an unknown
//!   field (likely a typo) a **warning** naming the object and the field's path.
//! - Kinds that are common in manifests but do not matter to the mesh (Deployment,
//!   ConfigMap, ...) are only counted.
//! - **A broken file never takes away what it served before.** The source keeps, per file,
//!   the objects of its last load without errors. When a file has any error, those objects
//!   are served instead of the new ones; if the file never loaded cleanly, the documents
//!   that did parse are served. The rest of the directory is served as usual.
//! - The same kind, namespace and name defined twice is an **error** naming both files;
//!   the definition in the file first in path order (or first in the file) wins. This does
//!   not count as the file being broken.
//! - A deleted file's objects are dropped.
//!
//! # ClusterIPs
//!
//! In a cluster the API server allocates each Service's ClusterIP. In file mode there is
//! none, so a Service without `spec.clusterIP` that is neither headless (`None`) nor
//! `ExternalName` gets a deterministic address in `10.96.0.0/16`, derived from the FNV-1a
//! hash of `namespace/name` with linear probing on collisions (never taking an address
//! another Service gives explicitly). It is written into `spec.clusterIP` and
//! `spec.clusterIPs` before translation, and reported as an **info** diagnostic.
//!
//! [`FileWatcher`] reloads on every change in the files and publishes [`Snapshot`]s
//! (see [`crate::snapshot`]).
//!
//! [`Snapshot`]: crate::snapshot::Snapshot

mod cluster_ips;
mod documents;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lanyard_index::{Object, ObjectRef, Objects};
use tracing::debug;

use crate::diagnostics::Diagnostic;
use crate::error::Error;

pub use watch::{DEBOUNCE, FileWatcher};

/// The namespace given to namespaced objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Manifests under one or more paths, with what each file served last.
#[derive(Debug)]
pub struct FileSource {
    roots: Vec<PathBuf>,
    /// Per file, the objects of its last load without errors.
    last_good: BTreeMap<PathBuf, Vec<Object>>,
}

/// The result of one load.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// Every object served, ClusterIPs filled in (shared: the Kubernetes store hands its
    /// objects over without a copy).
    pub objects: Arc<Objects>,
    /// In file order, then in document order within each file.
    pub diagnostics: Vec<Diagnostic>,
    /// How many files were read.
    pub files: usize,
    /// Documents of kinds that do not affect the mesh, by kind.
    pub unused_kinds: BTreeMap<String, usize>,
}

impl FileSource {
    /// A source reading these paths (files or directories). Fails if one does not exist.
    pub fn new(roots: impl IntoIterator<Item = impl Into<PathBuf>>) -> Result<Self, Error> {
        let roots: Vec<PathBuf> = roots.into_iter().map(Into::into).collect();
        if roots.is_empty() {
            return Err(Error::NoPaths);
        }
        for root in &roots {
            std::fs::metadata(root).map_err(|error| Error::Path {
                path: root.clone(),
                error,
            })?;
        }
        Ok(Self {
            roots,
            last_good: BTreeMap::new(),
        })
    }

    /// The paths this source reads.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Reads every file (see the module docs for the rules).
    pub fn load(&mut self) -> Loaded {
        let mut diagnostics = Vec::new();
        let files = self.discover(&mut diagnostics);
        let mut unused_kinds = BTreeMap::new();
        let mut served: Vec<(PathBuf, Vec<Object>)> = Vec::with_capacity(files.len());
        for file in &files {
            let Some(objects) = self.load_file(file, &mut diagnostics, &mut unused_kinds) else {
                continue;
            };
            served.push((file.clone(), objects));
        }
        // Files that are gone take their objects with them.
        let present: BTreeSet<&PathBuf> = served.iter().map(|(file, _)| file).collect();
        self.last_good.retain(|path, _| present.contains(path));

        let mut chosen = drop_duplicates(served, &mut diagnostics);
        diagnostics.extend(cluster_ips::assign(chosen.iter_mut().filter_map(
            |(file, object)| match object {
                Object::Service(service) => Some((file.as_path(), service)),
                _ => None,
            },
        )));
        sort_by_file(&mut diagnostics);

        let mut objects = Objects::default();
        for (_, object) in chosen {
            objects.apply(object);
        }
        if !unused_kinds.is_empty() {
            debug!(?unused_kinds, "skipped kinds that do not affect the mesh");
        }
        Loaded {
            objects: Arc::new(objects),
            diagnostics,
            files: files.len(),
            unused_kinds,
        }
    }

    /// One file's objects to serve, or `None` when the file has gone since it was listed.
    fn load_file(
        &mut self,
        file: &Path,
        diagnostics: &mut Vec<Diagnostic>,
        unused_kinds: &mut BTreeMap<String, usize>,
    ) -> Option<Vec<Object>> {
        let contents = match std::fs::read(file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => documents::parse_file(file, &text, DEFAULT_NAMESPACE),
                Err(e) => documents::FileContents {
                    diagnostics: vec![Diagnostic::error(file, format!("not UTF-8 text: {e}"))],
                    ..Default::default()
                },
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => documents::FileContents {
                diagnostics: vec![Diagnostic::error(file, format!("cannot read: {e}"))],
                ..Default::default()
            },
        };
        for (kind, count) in &contents.unused {
            *unused_kinds.entry(kind.clone()).or_default() += count;
        }
        let broken = contents.has_errors();
        diagnostics.extend(contents.diagnostics);
        if !broken {
            self.last_good
                .insert(file.to_path_buf(), contents.objects.clone());
            return Some(contents.objects);
        }
        match self.last_good.get(file) {
            Some(previous) => {
                diagnostics.push(Diagnostic::warning(
                    file,
                    format!(
                        "the file has errors: serving the {} object(s) of its last load without errors until it is fixed",
                        previous.len()
                    ),
                ));
                Some(previous.clone())
            }
            None => {
                if !contents.objects.is_empty() {
                    diagnostics.push(Diagnostic::warning(
                        file,
                        format!(
                            "the file has errors and never loaded without them: serving the {} object(s) that parsed",
                            contents.objects.len()
                        ),
                    ));
                }
                Some(contents.objects)
            }
        }
    }

    /// Every file to read, sorted and without duplicates.
    fn discover(&self, diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
        let mut files = BTreeSet::new();
        for root in &self.roots {
            match std::fs::metadata(root) {
                Ok(meta) if meta.is_dir() => {
                    let mut visited = BTreeSet::new();
                    self.walk(root, &mut visited, &mut files, diagnostics);
                }
                Ok(_) => {
                    files.insert(root.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    diagnostics.push(Diagnostic::warning(root, "does not exist (any more)"));
                }
                Err(e) => {
                    diagnostics.push(Diagnostic::error(root, format!("cannot read: {e}")));
                    self.keep_known_files_under(root, &mut files);
                }
            }
        }
        // The same file named twice (`-f dir -f ./dir/a.yaml`) is read once, under the name
        // first in order.
        let mut seen = BTreeSet::new();
        files
            .into_iter()
            .filter(|file| seen.insert(file.canonicalize().unwrap_or_else(|_| file.clone())))
            .collect()
    }

    fn walk(
        &self,
        dir: &Path,
        visited: &mut BTreeSet<PathBuf>,
        files: &mut BTreeSet<PathBuf>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        // Symbolic links may loop back to a directory already walked.
        if let Ok(canonical) = dir.canonicalize()
            && !visited.insert(canonical)
        {
            return;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    dir,
                    format!("cannot read directory: {e}"),
                ));
                self.keep_known_files_under(dir, files);
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // Follows symbolic links, which a mounted ConfigMap is made of.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => self.walk(&path, visited, files, diagnostics),
                Ok(_) if is_manifest(&path) => {
                    files.insert(path);
                }
                _ => {}
            }
        }
    }

    /// A directory that cannot be read is not a deleted one: its files keep serving what
    /// they served (they will fail to read, and fall back to their last good load).
    fn keep_known_files_under(&self, dir: &Path, files: &mut BTreeSet<PathBuf>) {
        files.extend(
            self.last_good
                .keys()
                .filter(|known| known.starts_with(dir))
                .cloned(),
        );
    }
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// Keeps the first definition of every object (files are in path order) and reports the
/// others.
fn drop_duplicates(
    served: Vec<(PathBuf, Vec<Object>)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(PathBuf, Object)> {
    let mut first_seen: BTreeMap<ObjectRef, PathBuf> = BTreeMap::new();
    let mut chosen = Vec::new();
    for (file, objects) in served {
        for object in objects {
            let name = object.object_ref();
            match first_seen.get(&name) {
                Some(first) if *first == file => diagnostics.push(
                    Diagnostic::error(
                        &file,
                        "defined more than once in this file: the first definition is used",
                    )
                    .with_object(name.to_string()),
                ),
                Some(first) => diagnostics.push(
                    Diagnostic::error(
                        &file,
                        format!(
                            "also defined in {}: the definition there is used (the file first in path order wins), this one is ignored",
                            first.display()
                        ),
                    )
                    .with_object(name.to_string()),
                ),
                None => {
                    first_seen.insert(name, file.clone());
                    chosen.push((file.clone(), object));
                }
            }
        }
    }
    chosen
}

/// Groups diagnostics by file in path order, keeping their order within each file.
fn sort_by_file(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| a.file.cmp(&b.file));
}

#[cfg(test)]
mod tests;
