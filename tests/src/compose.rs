//! docker/docker-compose.yml as data: the demo runs its services' commands (paths in the image
//! mapped to the repository) and the compose test checks them against the project, so the
//! compose demo, the embedded demo and the tests cannot drift apart.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use yaml_rust2::{Yaml, YamlLoader};

/// One service of the compose file.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub image: Option<String>,
    /// Built from the project's Dockerfile (not a stock image).
    pub built: bool,
    pub command: Vec<String>,
    pub environment: Vec<(String, String)>,
    /// (service, condition)
    pub depends_on: Vec<(String, String)>,
    pub healthcheck: Vec<String>,
    pub volumes: Vec<String>,
    pub ports: Vec<String>,
}

pub fn path() -> PathBuf {
    repo().join("docker/docker-compose.yml")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|x| match x {
                Yaml::String(s) => Some(s.clone()),
                Yaml::Integer(i) => Some(i.to_string()),
                _ => None,
            })
            .collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

pub fn load() -> Result<Vec<Service>> {
    let text = std::fs::read_to_string(path())?;
    let docs = YamlLoader::load_from_str(&text).context("docker-compose.yml is not YAML")?;
    let doc = docs.first().context("empty compose file")?;
    let Some(services) = doc["services"].as_hash() else {
        bail!("no services");
    };
    let mut out = Vec::new();
    for (name, s) in services {
        let name = name.as_str().context("service name")?.to_owned();
        let environment = match &s["environment"] {
            Yaml::Hash(h) => h
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => String::new(),
                    };
                    (k.as_str().unwrap_or_default().to_owned(), v)
                })
                .collect(),
            _ => Vec::new(),
        };
        let depends_on = match &s["depends_on"] {
            Yaml::Hash(h) => h
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap_or_default().to_owned(),
                        v["condition"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            other => strings(other)
                .into_iter()
                .map(|d| (d, String::new()))
                .collect(),
        };
        out.push(Service {
            image: s["image"].as_str().map(str::to_owned),
            built: !s["build"].is_badvalue(),
            command: strings(&s["command"]),
            environment,
            depends_on,
            healthcheck: strings(&s["healthcheck"]["test"]),
            volumes: strings(&s["volumes"]),
            ports: strings(&s["ports"]),
            name,
        });
    }
    Ok(out)
}

pub fn service(name: &str) -> Result<Service> {
    load()?
        .into_iter()
        .find(|s| s.name == name)
        .with_context(|| format!("no service {name:?} in docker-compose.yml"))
}

/// The image's `/app/...` paths (see docker/Dockerfile) as repository paths.
pub fn repo_path(repo: &Path, arg: &str) -> Option<PathBuf> {
    arg.strip_prefix("/app/").map(|p| repo.join(p))
}

impl Service {
    /// The command's arguments after the binary, `/app/...` paths mapped into `repo`.
    pub fn local_args(&self, repo: &Path) -> Vec<String> {
        self.command
            .iter()
            .skip(1)
            .map(|a| {
                repo_path(repo, a)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| a.clone())
            })
            .collect()
    }
}
