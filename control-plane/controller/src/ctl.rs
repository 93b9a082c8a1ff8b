//! What `lanyardctl` does, apart from parsing its flags.

use std::path::PathBuf;

use crate::error::Result;
use crate::files::FileSource;
use crate::proxy::ProxySelector;
use crate::report::{Format, Report, Show};
use crate::snapshot::{Settings, Snapshot};

/// `lanyardctl x translate`: the files at `paths` through the same loader and translators
/// the controller runs, and what one proxy would receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateRequest {
    /// Files or directories of manifests.
    pub paths: Vec<PathBuf>,
    /// Whose view of the mesh to show.
    pub proxy: ProxySelector,
    /// Which parts of the report to print.
    pub show: Show,
    /// YAML or JSON.
    pub format: Format,
    /// Controller name and cluster domain, as the controller would have them.
    pub settings: Settings,
}

/// The rendered report, and how many errors the input had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOutput {
    /// The report, ready to print.
    pub text: String,
    /// Error diagnostics of the input; the report is complete as far as the input allowed.
    pub errors: usize,
}

/// Loads, translates and renders (see [`TranslateRequest`]).
///
/// Fails only when the request itself cannot be served (a path that does not exist, a proxy
/// that is not in the input); problems in the files are reported in the output.
pub fn translate_files(request: &TranslateRequest) -> Result<TranslateOutput> {
    let mut source = FileSource::new(request.paths.iter().cloned())?;
    let snapshot = Snapshot::translate(1, source.load(), &request.settings);
    let proxy = request.proxy.resolve(&snapshot.objects)?;
    let xds = request
        .show
        .xds()
        .then(|| lanyard_xds::render::resources_value(&snapshot.mesh.for_proxy(&proxy)));
    let report = Report::new(&snapshot, request.show, xds)?;
    Ok(TranslateOutput {
        text: report.render(request.format)?,
        errors: snapshot.errors(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn request(paths: Vec<PathBuf>, proxy: ProxySelector, show: Show) -> TranslateRequest {
        TranslateRequest {
            paths,
            proxy,
            show,
            format: Format::Yaml,
            settings: Settings::default(),
        }
    }

    #[test]
    fn errors_in_the_input_are_counted_and_the_rest_is_still_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec: {ports: [{port: 80}]}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yaml"), "kind: [broken\n").unwrap();
        let output = translate_files(&request(
            vec![dir.path().to_path_buf()],
            ProxySelector::default(),
            Show::Status,
        ))
        .unwrap();
        assert_eq!(output.errors, 1);
        assert!(output.text.contains("b.yaml"), "{}", output.text);
        assert!(output.text.contains("severity: error"), "{}", output.text);
    }

    #[test]
    fn a_missing_path_or_pod_fails_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = translate_files(&request(vec![missing], ProxySelector::default(), Show::All))
            .unwrap_err();
        assert!(matches!(err, Error::Path { .. }), "{err}");

        let err = translate_files(&request(
            vec![dir.path().to_path_buf()],
            "ns/pod".parse().unwrap(),
            Show::Status,
        ))
        .unwrap_err();
        assert!(matches!(err, Error::UnknownProxy { .. }), "{err}");
    }
}
