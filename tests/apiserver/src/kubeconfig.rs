//! The kubeconfig file the fixture writes for kubectl and `kube::Config`.

use std::path::{Path, PathBuf};

/// Name of the cluster, user and context in the written kubeconfig.
pub const CONTEXT: &str = "lanyard-test";

/// Writes a kubeconfig for `server` (e.g. `http://127.0.0.1:PORT`) into `dir`; its current
/// context uses the `default` namespace and no credentials.
pub fn write(dir: &Path, server: &str) -> std::io::Result<PathBuf> {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, render(server))?;
    Ok(path)
}

fn render(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: {server}
users:
- name: {CONTEXT}
  user: {{}}
contexts:
- name: {CONTEXT}
  context:
    cluster: {CONTEXT}
    user: {CONTEXT}
    namespace: default
current-context: {CONTEXT}
preferences: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_yaml_naming_the_server() {
        let v: serde_json::Value = serde_yaml::from_str(&render("http://127.0.0.1:1")).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "http://127.0.0.1:1");
        assert_eq!(v["current-context"], CONTEXT);
    }
}
