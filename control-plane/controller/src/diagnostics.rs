//! Diagnostics: what the loader has to say about the user's files.
//!
//! Every diagnostic names the file it is about and, when known, the object
//! (`HTTPRoute ns/name`). Route problems are not diagnostics: they are reported through the
//! route's status.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something in the input could not be used (a file that does not parse, an invalid
    /// object, a duplicate). The input is wrong and needs fixing.
    Error,
    /// Something was used but is likely not what the user meant (an unknown field, an
    /// unknown kind).
    Warning,
    /// Something the loader did on the user's behalf (a ClusterIP it assigned).
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One finding about one file (and possibly one object in it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file, as found under the configured path.
    #[serde(serialize_with = "serialize_path")]
    pub file: PathBuf,
    /// The object, as `Kind namespace/name`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// How bad it is.
    pub severity: Severity,
    /// What is wrong, for a person to read.
    pub message: String,
}

impl Diagnostic {
    /// An error about a file.
    pub fn error(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, file, message)
    }

    /// A warning about a file.
    pub fn warning(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, file, message)
    }

    /// An informational note about a file.
    pub fn info(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::new(Severity::Info, file, message)
    }

    fn new(severity: Severity, file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            object: None,
            severity,
            message: message.into(),
        }
    }

    /// The same diagnostic, naming an object.
    pub fn with_object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.severity, self.file.display())?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        f.write_str(&self.message)
    }
}

fn serialize_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&path.display())
}

/// How many errors a list of diagnostics holds.
pub fn count_errors(diagnostics: &[Diagnostic]) -> usize {
    diagnostics.iter().filter(|d| d.is_error()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagnostic_reads_as_severity_file_object_message() {
        let d = Diagnostic::warning("dir/a.yaml", "unknown field `spec.rulez`")
            .with_object("HTTPRoute ns/r");
        assert_eq!(
            d.to_string(),
            "warning: dir/a.yaml: HTTPRoute ns/r: unknown field `spec.rulez`"
        );
        assert_eq!(
            Diagnostic::error("a.yaml", "broken").to_string(),
            "error: a.yaml: broken"
        );
    }
}
