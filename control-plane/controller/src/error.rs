//! The errors of this crate.

use std::path::PathBuf;

/// Why the controller or `lanyardctl` could not do what was asked. Messages include their
/// cause, so they read whole with `{}`.
///
/// Problems *in* the user's files are not errors: they are
/// [`Diagnostic`](crate::diagnostics::Diagnostic)s, and loading carries on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured path cannot be read.
    #[error("{}: {error} (is the path right, and readable by this process?)", path.display())]
    Path {
        /// The path as configured.
        path: PathBuf,
        /// Why it cannot be read.
        error: std::io::Error,
    },

    /// No path to read manifests from.
    #[error("no path to read manifests from: give at least one file or directory")]
    NoPaths,

    /// The file system watcher could not be set up.
    #[error("cannot watch {}: {error} (on Linux, check fs.inotify.max_user_watches)", path.display())]
    Watch {
        /// What was to be watched.
        path: PathBuf,
        /// What the watcher said.
        error: notify::Error,
    },

    /// The thread that reloads the files could not be started.
    #[error("cannot start the file watcher thread: {0}")]
    Thread(std::io::Error),

    /// A proxy was named in a form that is not `NAMESPACE/POD`.
    #[error(
        "invalid proxy {0:?}: name it as NAMESPACE/POD, for example default/productpage-v1-7d8f9"
    )]
    InvalidProxy(String),

    /// A proxy named a pod that is not in the input.
    #[error("{}", unknown_proxy_message(.proxy, .known))]
    UnknownProxy {
        /// The pod asked for, as `namespace/name`.
        proxy: String,
        /// Every pod in the input, as `namespace/name`.
        known: Vec<String>,
    },

    /// A listening address could not be bound.
    #[error(
        "cannot listen for {what} on {address}: {error} (is the port taken? port 0 picks a free one)"
    )]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address asked for.
        address: std::net::SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },

    /// A server stopped with an error.
    #[error("{0}")]
    Serve(String),

    /// Logging could not be set up.
    #[error("cannot set up logging: {0}")]
    LogFilter(String),

    /// The Kubernetes API server cannot be reached or configured.
    #[error("{0} (check --kubeconfig, $KUBECONFIG or the pod's service account)")]
    Kubernetes(String),

    /// The report could not be rendered.
    #[error("cannot render the report: {0}")]
    Render(String),
}

fn unknown_proxy_message(proxy: &str, known: &[String]) -> String {
    let hint = "name a Pod of the input as NAMESPACE/POD, or use --namespace NAMESPACE for a client without a pod";
    if known.is_empty() {
        format!("pod {proxy} is not in the input, which has no Pods; {hint}")
    } else {
        format!(
            "pod {proxy} is not in the input; {hint}. Pods in the input: {}",
            known.join(", ")
        )
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
