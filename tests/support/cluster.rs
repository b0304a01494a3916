//! A cluster for end-to-end tests of `groupban-operator run`, one of three:
//! - a real cluster (kind, say) when `GROUPBAN_E2E_KUBECONFIG` names a
//!   kubeconfig: the operator runs with that kubeconfig;
//! - the real control plane of [`super::control_plane`] when
//!   `GROUPBAN_CONTROL_PLANE` names its binaries (CI): the chart is installed
//!   with default values and the operator runs as the chart's
//!   ServiceAccount, with a TokenRequest token and nothing else, so every
//!   request it makes is authorized by the chart's own RBAC;
//! - otherwise the in-process fake API server, for fast local runs.
//!
//! On a real server each test works in a namespace of its own. Tests talk
//! to any of them through kube clients only.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use groupban_operator::crd::{GroupBanPolicy, GroupBanPolicyStatus};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::control_plane::{self, ControlPlane};
use super::fake_apiserver::FakeApiServer;
use super::{ADMIN, SDKAPPID};

pub const BIN: &str = env!("CARGO_BIN_EXE_groupban-operator");
/// The field manager tests write specs with (the operator's is another).
const TEST_MANAGER: &str = "e2e-test";

pub struct Cluster {
    pub fake: Option<FakeApiServer>,
    /// The local real control plane, when the tests run on it.
    pub plane: Option<&'static ControlPlane>,
    pub client: Client,
    pub namespace: String,
    /// The tests' own credentials (an admin).
    pub kubeconfig: PathBuf,
    /// What `run` connects with: on the local control plane, the chart's
    /// ServiceAccount token; elsewhere the tests' own.
    pub operator_kubeconfig: PathBuf,
    /// Where a leader-electing operator keeps its Lease, and the Lease's
    /// name (one per test: tests run side by side on one server).
    pub lease_namespace: String,
    pub lease_name: String,
    /// The user name the real API server sees for the operator.
    pub operator_user: Option<String>,
    /// Set by [`Cluster::cleanup`]; otherwise (a test that failed) the
    /// namespace is deleted on drop.
    cleaned: bool,
    _dir: tempfile::TempDir,
}

/// A client for the cluster a kubeconfig file names.
pub async fn client_from(kubeconfig: &std::path::Path) -> Client {
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("the kubeconfig is readable"),
        &options,
    )
    .await
    .expect("a valid kubeconfig");
    Client::try_from(config).unwrap()
}

async fn create_namespace(client: &Client, prefix: &str) -> String {
    let namespace = format!("{prefix}-{}", rand::random::<u32>());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap())
        .await
        .expect("create the test namespace");
    namespace
}

impl Cluster {
    pub async fn start() -> Cluster {
        groupban_operator::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let lease_name = format!("groupban-operator-{}", rand::random::<u32>());
        if let Some(path) = std::env::var_os("GROUPBAN_E2E_KUBECONFIG") {
            let kubeconfig = PathBuf::from(path);
            let client = client_from(&kubeconfig).await;
            let namespace = create_namespace(&client, "groupban-e2e").await;
            return Cluster {
                fake: None,
                plane: None,
                client,
                lease_namespace: namespace.clone(),
                namespace,
                operator_kubeconfig: kubeconfig.clone(),
                kubeconfig,
                operator_user: None,
                lease_name,
                cleaned: false,
                _dir: dir,
            };
        }
        // Starting the control plane blocks (processes, certificates): off
        // the test's runtime, which may be serving a simulator already.
        let plane = tokio::task::spawn_blocking(|| {
            control_plane::shared().inspect(|plane| {
                plane.default_release();
            })
        })
        .await
        .expect("the control plane starts");
        if let Some(plane) = plane {
            let kubeconfig = plane.admin_kubeconfig.clone();
            let client = client_from(&kubeconfig).await;
            let namespace = create_namespace(&client, "e2e").await;
            // The namespaced values: a release of its own watching only
            // this test's namespace.
            let release = if std::env::var_os("GROUPBAN_E2E_NAMESPACED_RELEASE").is_some() {
                let watched = namespace.clone();
                tokio::task::spawn_blocking(move || plane.namespaced_release(&watched)).await.unwrap()
            } else {
                plane.default_release().clone()
            };
            return Cluster {
                fake: None,
                plane: Some(plane),
                client,
                namespace,
                kubeconfig,
                operator_kubeconfig: release.kubeconfig.clone(),
                lease_namespace: release.namespace.clone(),
                operator_user: Some(release.user()),
                lease_name,
                cleaned: false,
                _dir: dir,
            };
        }
        Self::start_fake_in(dir, lease_name).await
    }

    /// The in-process fake API server, whatever the environment says (the
    /// fake-server benchmark compares against it).
    pub async fn start_fake() -> Cluster {
        groupban_operator::install_crypto_provider();
        Self::start_fake_in(tempfile::tempdir().unwrap(), format!("groupban-operator-{}", rand::random::<u32>())).await
    }

    async fn start_fake_in(dir: tempfile::TempDir, lease_name: String) -> Cluster {
        let fake = FakeApiServer::start().await;
        let kubeconfig = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig);
        let client = fake.client();
        Cluster {
            fake: Some(fake),
            plane: None,
            client,
            namespace: "e2e".into(),
            operator_kubeconfig: kubeconfig.clone(),
            kubeconfig,
            lease_namespace: "e2e".into(),
            operator_user: None,
            lease_name,
            cleaned: false,
            _dir: dir,
        }
    }

    /// The requests the operator made in this test's namespace, as the
    /// real API server's audit log recorded them (the local control plane
    /// only; `None` elsewhere).
    pub fn operator_requests(&self) -> Option<Vec<control_plane::AuditedRequest>> {
        let (plane, user) = (self.plane?, self.operator_user.as_ref()?);
        Some(plane.requests_by(user).into_iter().filter(|r| r.namespace == self.namespace).collect())
    }

    pub fn policies(&self) -> Api<GroupBanPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates or replaces the credentials Secret `name`.
    pub async fn put_secret(&self, name: &str, endpoint: &str, key: &str) {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"sdkAppId": SDKAPPID.to_string(), "identifier": ADMIN, "secretKey": key, "endpoint": endpoint},
        });
        self.secrets()
            .patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(secret))
            .await
            .expect("apply the Secret");
    }

    /// Creates or updates a policy's spec (server-side apply, as kubectl
    /// apply --server-side or a GitOps tool would).
    pub async fn apply_policy(&self, name: &str, spec: Value) {
        let policy = json!({
            "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
            "metadata": {"name": name},
            "spec": spec,
        });
        self.policies()
            .patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(policy))
            .await
            .expect("apply the policy");
    }

    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.policies().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.expect("annotate");
    }

    pub async fn delete_policy(&self, name: &str) {
        self.policies().delete(name, &DeleteParams::default()).await.expect("delete the policy");
    }

    pub async fn status(&self, name: &str) -> GroupBanPolicyStatus {
        self.policies().get(name).await.expect("get the policy").status.unwrap_or_default()
    }

    /// Polls the policy until `done` holds; panics with the last status
    /// after `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&GroupBanPolicy) -> bool,
    ) -> GroupBanPolicy {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let policy = self.policies().get_opt(name).await.expect("get the policy");
            if let Some(policy) = policy {
                if done(&policy) {
                    return policy;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!("{name}: condition not met in {timeout:?}; status: {:#?}", policy.status);
                }
            } else if tokio::time::Instant::now() > deadline {
                panic!("{name}: not found after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Event reasons recorded for `name`, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = events.list(&Default::default()).await.expect("list Events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect()
    }

    pub async fn cleanup(mut self) {
        // A real server's namespace deletion never finishes without a
        // controller-manager; the request is enough (the objects go with
        // the control plane at the end of the run).
        if self.fake.is_none() {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let _ = namespaces.delete(&self.namespace, &DeleteParams::default()).await;
        }
        if let Some(fake) = self.fake.take() {
            fake.stop().await;
        }
        self.cleaned = true;
    }
}

impl Drop for Cluster {
    /// A test that failed (panicked before `cleanup`) leaves no namespace
    /// behind on a real cluster: deleted from a thread of its own, with a
    /// client of its own (the test's runtime is going away).
    fn drop(&mut self) {
        if self.cleaned || self.fake.is_some() {
            return;
        }
        let (kubeconfig, namespace) = (self.kubeconfig.clone(), self.namespace.clone());
        let deleting = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let client = client_from(&kubeconfig).await;
                let namespaces: Api<Namespace> = Api::all(client);
                let params = DeleteParams::default();
                let _ = tokio::time::timeout(Duration::from_secs(10), namespaces.delete(&namespace, &params)).await;
            });
        });
        let _ = deleting.join();
    }
}

/// `groupban-operator run` as a child process.
pub struct Operator {
    pub child: Child,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator on the cluster's namespace, with quick retries
    /// and progress, logging to a file in a fresh temp dir.
    pub fn start(cluster: &Cluster, extra: &[&str]) -> Operator {
        Self::start_with_env(cluster, extra, &[])
    }

    /// [`Operator::start`] with extra environment variables (`POD_NAME`...).
    pub fn start_with_env(cluster: &Cluster, extra: &[&str], env: &[(&str, &str)]) -> Operator {
        let log = std::env::temp_dir().join(format!("groupban-e2e-{}.log", rand::random::<u64>()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--namespace", &cluster.namespace, "--progress-interval", "1s"])
            .args(["--stalled-recheck-interval", "1h", "--max-attempts", "3"])
            // Leader election is on by default: a Lease of the test's own,
            // as tests run side by side on one API server.
            .args(["--leader-election-id", &cluster.lease_name])
            .args(extra)
            .envs(env.iter().copied())
            .env("KUBECONFIG", &cluster.operator_kubeconfig)
            .env("POD_NAMESPACE", &cluster.lease_namespace)
            .env("RUST_LOG", std::env::var("GROUPBAN_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start groupban-operator run");
        Operator { child, log }
    }

    /// `groupban-operator` with exactly `args` and `env` (no kubeconfig or
    /// flags of the test's own): as a chart's pod runs it, say.
    pub fn start_raw(args: &[String], env: &[(String, String)]) -> Operator {
        Self::start_program(BIN, args, env)
    }

    /// `program` (a wrapper that ends by running the operator) with
    /// exactly `args` and `env`, logging to a file like the others.
    pub fn start_program(program: &str, args: &[String], env: &[(String, String)]) -> Operator {
        let log = std::env::temp_dir().join(format!("groupban-e2e-{}.log", rand::random::<u64>()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .env_remove("KUBECONFIG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start groupban-operator");
        Operator { child, log }
    }

    /// The base URL of the operator's /metrics: it binds port 0 and logs
    /// the address it got (a port picked by the test could be taken).
    pub async fn metrics_base(&self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let logs = self.logs();
            let bound = logs.lines().find(|l| l.contains("Serving /metrics")).and_then(|l| {
                let at = l.find("addr")? + "addr".len();
                let rest = l[at..].trim_start_matches(['=', '"', ':', ' ']);
                Some(rest.split(['"', ' ', ',']).next()?.to_string())
            });
            if let Some(addr) = bound {
                return format!("http://{addr}");
            }
            assert!(tokio::time::Instant::now() < deadline, "no metrics address logged: {logs}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal}");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// True when the policy's Ready condition is True for its generation.
pub fn is_ready(policy: &GroupBanPolicy) -> bool {
    condition(policy, "Ready").is_some_and(|(status, _)| status == "True")
        && policy.status.as_ref().and_then(|s| s.observed_generation) == policy.metadata.generation
}

/// (status, reason) of a condition.
pub fn condition(policy: &GroupBanPolicy, kind: &str) -> Option<(String, String)> {
    let status = policy.status.as_ref()?;
    let found = status.conditions.iter().find(|c| c.type_ == kind)?;
    Some((found.status.clone(), found.reason.clone()))
}
