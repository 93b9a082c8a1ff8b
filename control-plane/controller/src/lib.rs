//! The Lanyard controller: sources of Kubernetes objects, the translation loop, and what
//! the `lanyard-controller` and `lanyardctl` binaries do.
//!
//! - [`files`]: manifests on disk, loaded ([`files::FileSource`]) and watched
//!   ([`files::FileWatcher`]), with [`diagnostics`] about them;
//! - [`k8s`]: the objects on a Kubernetes API server, watched ([`k8s::KubeWatcher`]);
//! - [`snapshot`]: the objects of a load with their translation, as the ADS server and
//!   status reporting consume them;
//! - [`report`]: route status, diagnostics, model and a proxy's xDS resources as YAML/JSON;
//! - [`proxy`]: naming the proxy whose view to show;
//! - [`ctl`]: `lanyardctl x translate`;
//! - [`xds`]: serving the snapshots over ADS, with the debug endpoint;
//! - [`runtime`] and [`logs`]: the controller process.

pub mod ctl;
pub mod diagnostics;
pub mod error;
pub mod files;
pub mod k8s;
pub mod logs;
pub mod nacks;
pub mod proxy;
pub mod report;
pub mod runtime;
pub mod smi;
pub mod snapshot;
pub mod xds;

pub use diagnostics::{Diagnostic, Severity};
pub use error::{Error, Result};
pub use files::{FileSource, FileWatcher, Loaded};
pub use snapshot::{Settings, Snapshot};
