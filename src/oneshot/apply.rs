//! `groupban-operator apply`: the engine over manifest files, one pass,
//! with an optional state file as the status store.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

use crate::crd::{GroupBanPolicyStatus, condition_types};
use crate::engine::clients::ClientPool;
use crate::engine::conditions::find_condition;
use crate::engine::credentials::{self, CredentialsError};
use crate::engine::{PolicyInput, run_pass};
use crate::im::{ClientSettings, RateLimit, TransportError};
use crate::oneshot::manifests::{self, ManifestError, Manifests};
use crate::oneshot::state_file::{StateError, StateFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Clone)]
pub struct ApplyOptions {
    pub state: Option<PathBuf>,
    pub output: OutputFormat,
    pub max_calls_per_second: u32,
    pub client: ClientSettings,
    /// Turns true to stop the run: no new call starts, answers of calls in
    /// flight are kept and saved. `None`: the run goes to its end.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// What a run produced.
pub struct ApplyResult {
    /// A kubectl-style `List` of the policies with their status.
    pub list: Value,
    pub all_ready: bool,
    /// Why the final state could not be saved, if it could not; the run
    /// then exits 1 after printing its result.
    pub state_error: Option<String>,
    pub summary: RunSummary,
}

/// Figures for the closing summary line.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    pub policies: usize,
    pub ready: usize,
    pub calls_planned: usize,
    pub seconds: f64,
}

/// The List could not be written out (which would be a bug: it is plain
/// JSON); the state file, when there is one, has been saved regardless.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the results: {0}")]
pub struct RenderError(String);

impl ApplyResult {
    /// The List of policies and their status, as `-o` asks.
    pub fn render(&self, format: OutputFormat) -> Result<String, RenderError> {
        match format {
            OutputFormat::Json => {
                serde_json::to_string_pretty(&self.list).map(|text| text + "\n").map_err(|e| RenderError(e.to_string()))
            }
            OutputFormat::Yaml => yaml_serde::to_string(&self.list).map_err(|e| RenderError(e.to_string())),
        }
    }
}

/// Why `apply` could not run: its input (exit 2), or the HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    #[error("no GroupBanPolicy (groupban.dev/v1alpha1) found in {0}")]
    NoPolicy(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("failed to set up the IM HTTP client")]
    HttpClient(#[source] TransportError),
}

impl ApplyError {
    /// True when the user must fix the input (the manifests, the state
    /// file); false for what no input can fix.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, ApplyError::HttpClient(_) | ApplyError::Manifests(ManifestError::Schema(_)))
    }

    /// A bounded label for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ApplyError::Manifests(error) => error.category(),
            ApplyError::NoPolicy(_) => "NoPolicy",
            ApplyError::State(_) => "StateFile",
            ApplyError::HttpClient(_) => "HttpClient",
        }
    }
}

/// Loads the manifests under `paths`, then runs [`apply_manifests`].
pub async fn apply(paths: &[PathBuf], options: &ApplyOptions) -> Result<ApplyResult, ApplyError> {
    let manifests = manifests::load(paths)?;
    if manifests.policies.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ApplyError::NoPolicy(shown.join(", ")));
    }
    apply_manifests(manifests, options).await
}

/// Reconciles every loaded policy once and saves the state after every
/// batch of answers.
pub async fn apply_manifests(manifests: Manifests, options: &ApplyOptions) -> Result<ApplyResult, ApplyError> {
    let started = Instant::now();
    let mut state = match &options.state {
        Some(path) => Some(StateFile::open(path)?),
        None => None,
    };
    let inputs: Vec<PolicyInput> = manifests
        .policies
        .iter()
        .map(|loaded| {
            let spec = &loaded.policy.spec;
            let secret = credentials::secret_for(&loaded.namespace, spec, None);
            let target = match manifests.secrets.get(&(secret.namespace.clone(), secret.name.clone())) {
                Some(found) => credentials::from_secret(found, &secret.to_string()),
                None => Err(CredentialsError::SecretNotFound { secret: secret.to_string() }),
            };
            PolicyInput {
                key: loaded.key(),
                spec: spec.clone(),
                generation: loaded.policy.metadata.generation,
                recorded: state.as_ref().map(|s| s.recorded(&loaded.key())).unwrap_or_default(),
                target,
            }
        })
        .collect();
    let keys: Vec<String> = inputs.iter().map(|i| i.key.clone()).collect();

    let pool = ClientPool::new(RateLimit::per_second(options.max_calls_per_second), options.client.clone())
        .map_err(ApplyError::HttpClient)?;
    let progress_bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} calls")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut save_error = None;
    let mut calls_planned = 0;
    let (_never, never) = tokio::sync::watch::channel(false);
    let shutdown = options.stop.clone().unwrap_or(never);
    let outcomes = run_pass(&inputs, &pool, shutdown, |statuses, progress| {
        calls_planned = progress.calls_planned;
        if let Some(bar) = &progress_bar {
            bar.set_length(progress.calls_planned as u64);
            bar.set_position(progress.calls_done as u64);
        }
        // A failed save (a full disk, say) is retried at the next answer;
        // the calls go on, since unbanning twice is harmless.
        if let Some(state) = state.as_mut() {
            save_error = state.save(keys.iter().cloned().zip(statuses)).err();
        }
    })
    .await;
    if let Some(bar) = progress_bar {
        bar.finish_and_clear();
    }
    let statuses: Vec<GroupBanPolicyStatus> = outcomes.into_iter().map(|outcome| outcome.status).collect();
    if let Some(state) = state.as_mut() {
        save_error = state.save(keys.iter().cloned().zip(&statuses)).err();
    }

    let is_ready = |status: &GroupBanPolicyStatus| {
        find_condition(status, condition_types::READY).is_some_and(|c| c.status == "True")
    };
    let ready = statuses.iter().filter(|s| is_ready(s)).count();
    let items: Vec<Value> = manifests
        .policies
        .iter()
        .zip(&statuses)
        .map(|(loaded, status)| {
            let mut policy = loaded.policy.clone();
            policy.metadata.namespace = Some(loaded.namespace.clone());
            policy.status = Some(status.clone());
            serde_json::to_value(&policy).unwrap_or(Value::Null)
        })
        .collect();
    Ok(ApplyResult {
        list: json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}),
        all_ready: ready == statuses.len(),
        state_error: save_error.map(|e| e.to_string()),
        summary: RunSummary {
            policies: statuses.len(),
            ready,
            calls_planned,
            seconds: started.elapsed().as_secs_f64(),
        },
    })
}

/// Peak resident memory of this process, from /proc (Linux only).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
