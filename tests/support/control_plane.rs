//! A real Kubernetes control plane for the test suite: etcd and
//! kube-apiserver, built from their Go modules by `.ci/control-plane`,
//! started on loopback with free ports, serving certificates, an admin
//! credential, `--authorization-mode=RBAC`, service-account token issuing
//! and the default admission plugins. No kubelet, scheduler or
//! controller-manager: nothing here may wait on what only they do.
//!
//! One control plane serves a whole test binary (tests share it, each in a
//! namespace of its own): it starts at the first use and ends with the
//! process, however the process ends. Each server runs under a small shell
//! that kills it when the test process's end of a pipe closes, which the
//! kernel does for any exit, a panic or a SIGKILL included.
//!
//! Where the binaries are: `GROUPBAN_CONTROL_PLANE` names the folder that
//! `.ci/control-plane` prints. Without it the e2e suites use the in-process
//! fake API server, except under `GROUPBAN_REQUIRE_CONTROL_PLANE` (set by
//! CI), where a missing control plane is a failure.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The namespace and name of the release the suite installs with default
/// values: the operator in the e2e suites runs as its ServiceAccount.
pub const RELEASE_NAMESPACE: &str = "groupban-system";
pub const RELEASE: &str = "groupban";
/// The ServiceAccount the chart makes for [`RELEASE`]: `<release>-groupban-operator`.
pub const SERVICE_ACCOUNT: &str = "groupban-groupban-operator";

pub struct ControlPlane {
    pub bin: PathBuf,
    pub dir: PathBuf,
    /// The API server's URL (`https://127.0.0.1:PORT`).
    pub url: String,
    pub port: u16,
    /// A kubeconfig for `system:masters` (client certificate).
    pub admin_kubeconfig: PathBuf,
    /// The CA that signed the serving certificate.
    pub ca: PathBuf,
    /// The audit log: one JSON line per request, at Metadata level.
    pub audit_log: PathBuf,
    /// The servers' own logs, for messages on failure.
    pub logs: Vec<PathBuf>,
    // The write ends of the pipes the watchdogs read: dropped only when the
    // process ends.
    _lifelines: Mutex<Vec<(Child, ChildStdin)>>,
    _dir: tempfile::TempDir,
}

/// The folder with `kube-apiserver`, `etcd`, `kubectl`, `helm` and
/// `kstatus`, when the suite should use the real control plane.
pub fn binaries() -> Option<PathBuf> {
    match std::env::var_os("GROUPBAN_CONTROL_PLANE") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("kube-apiserver").is_file(),
                "GROUPBAN_CONTROL_PLANE={} has no kube-apiserver: run bash .ci/control-plane",
                dir.display()
            );
            Some(dir)
        }
        None => {
            assert!(
                std::env::var_os("GROUPBAN_REQUIRE_CONTROL_PLANE").is_none(),
                "GROUPBAN_REQUIRE_CONTROL_PLANE is set but GROUPBAN_CONTROL_PLANE is not: \
                 export GROUPBAN_CONTROL_PLANE=$(bash .ci/control-plane | tail -n 1)"
            );
            None
        }
    }
}

/// The control plane of this test binary, started at the first call; `None`
/// when [`binaries`] finds none.
pub fn shared() -> Option<&'static ControlPlane> {
    static SHARED: OnceLock<Option<ControlPlane>> = OnceLock::new();
    SHARED.get_or_init(|| binaries().map(|bin| ControlPlane::start(&bin))).as_ref()
}

/// For tests that need the real server: the control plane with the chart's
/// default release installed, or `None` with a notice (the test then
/// returns; [`binaries`] fails it under GROUPBAN_REQUIRE_CONTROL_PLANE).
pub async fn for_test(test: &str) -> Option<&'static ControlPlane> {
    let plane = tokio::task::spawn_blocking(|| {
        shared().inspect(|plane| {
            plane.default_release();
        })
    })
    .await
    .expect("the control plane starts");
    if plane.is_none() {
        eprintln!(
            "SKIPPED {test}: no control plane (export GROUPBAN_CONTROL_PLANE=$(bash .ci/control-plane | tail -n 1))"
        );
    }
    plane
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Runs `program args` under a watchdog shell that kills it when our end of
/// its standard input closes; its output goes to `log`.
fn spawn_tied(program: &Path, args: &[String], log: &Path) -> (Child, ChildStdin) {
    let file = std::fs::File::create(log).unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(r#"exec 3<&0 </dev/null; "$@" & pid=$!; trap 'kill -TERM $pid' TERM; read -r -u 3 _; kill -TERM $pid 2>/dev/null; sleep 2; kill -KILL $pid 2>/dev/null; wait"#)
        .arg("tied")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// A watchdog that removes `dir` once our end of its standard input closes
/// (the test process ended), after the servers' watchdogs had time to stop
/// them.
fn remove_when_done(dir: &Path) -> (Child, ChildStdin) {
    let mut child = Command::new("bash")
        .args(["-c", r#"read -r _; sleep 5; rm -rf -- "$1""#, "cleanup"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the cleanup watchdog");
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Waits until `ready()` holds, or panics with the tail of `log`.
fn wait_until(what: &str, timeout: Duration, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            panic!("{what} not ready in {timeout:?}; last lines of {}:\n{}", log.display(), tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"#;

impl ControlPlane {
    fn start(bin: &Path) -> ControlPlane {
        let started = Instant::now();
        let tmp = tempfile::Builder::new().prefix("groupban-control-plane-").tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        // A CA, the API server's serving certificate, the admin's client
        // certificate and the service-account signing key.
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=groupban-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let sign = |name: &str, subject: &str, extensions: &str| {
            openssl(
                &dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    subject,
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &format!("{name}.crt"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        };
        sign(
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
        );
        sign("admin", "/O=system:masters/CN=groupban-test-admin", "extendedKeyUsage=clientAuth\n");
        openssl(&dir, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(&dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();

        // The folder (etcd's data, the audit log, the CA's key) goes when the
        // test process does: a static's TempDir is never dropped. A third
        // watchdog removes it once both servers have had time to stop.
        let mut lifelines = vec![remove_when_done(&dir)];
        let (etcd_port, etcd_peer, port) = (free_port(), free_port(), free_port());
        let etcd_log = dir.join("etcd.log");
        let etcd_args: Vec<String> = vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            "--log-level=warn".into(),
            // Tests care about speed, not durability.
            "--unsafe-no-fsync".into(),
        ];
        lifelines.push(spawn_tied(&bin.join("etcd"), &etcd_args, &etcd_log));
        wait_until("etcd", Duration::from_secs(30), &etcd_log, || {
            std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
        });

        let apiserver_log = dir.join("kube-apiserver.log");
        let audit_log = dir.join("audit.log");
        let path = |name: &str| dir.join(name).display().to_string();
        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", path("certs")),
            format!("--tls-cert-file={}", path("apiserver.crt")),
            format!("--tls-private-key-file={}", path("apiserver.key")),
            format!("--client-ca-file={}", path("ca.crt")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            format!("--audit-policy-file={}", path("audit-policy.yaml")),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-maxsize=0".into(),
            "--v=1".into(),
        ];
        lifelines.push(spawn_tied(&bin.join("kube-apiserver"), &apiserver_args, &apiserver_log));

        let url = format!("https://127.0.0.1:{port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &admin_kubeconfig,
            kubeconfig(
                &url,
                &dir.join("ca.crt"),
                &format!("client-certificate: {}\n      client-key: {}", path("admin.crt"), path("admin.key")),
                "default",
            ),
        )
        .unwrap();
        let plane = ControlPlane {
            bin: bin.to_path_buf(),
            url,
            port,
            ca: dir.join("ca.crt"),
            audit_log,
            logs: vec![etcd_log, apiserver_log.clone()],
            admin_kubeconfig,
            dir,
            _lifelines: Mutex::new(lifelines),
            _dir: tmp,
        };
        wait_until("kube-apiserver", Duration::from_secs(90), &apiserver_log, || {
            plane.kubectl_status(&["get", "--raw", "/readyz", "--request-timeout=5s"]).is_ok()
        });
        eprintln!("control plane: kube-apiserver ready at {} in {:?}", plane.url, started.elapsed());
        plane
    }

    /// `kubectl` as the admin; its standard output, or the error it printed.
    pub fn kubectl_status(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_with(&self.admin_kubeconfig, args, None)
    }

    /// `kubectl` as the admin; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_status(args).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    /// `kubectl` with `kubeconfig`, optionally feeding `stdin`.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        tool_output(&self.bin.join("kubectl"), kubeconfig, args, stdin)
    }

    /// `helm` as the admin; its output, or the error it printed.
    pub fn helm(&self, args: &[&str]) -> Result<String, String> {
        tool_output(&self.bin.join("helm"), &self.admin_kubeconfig, args, None)
    }

    /// A kubeconfig that authenticates with `token` and nothing else, its
    /// default namespace `namespace`.
    pub fn token_kubeconfig(&self, path: &Path, token: &str, namespace: &str) {
        std::fs::write(path, kubeconfig(&self.url, &self.ca, &format!("token: {token}"), namespace)).unwrap();
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest
    /// API, as the kubelet would mount it in the operator's pod.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"]).trim().to_string()
    }

    /// Installs the chart as release `release` in `namespace` (created if
    /// need be), with `--set` pairs.
    pub fn helm_install(&self, release: &str, namespace: &str, sets: &[&str]) -> Result<String, String> {
        let chart = format!("{ROOT}/charts/groupban-operator");
        let mut args = vec![
            "install",
            release,
            chart.as_str(),
            "--namespace",
            namespace,
            "--create-namespace",
            "--timeout",
            "60s",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        self.helm(&args)
    }

    /// The chart's default release, installed once per test binary: the CRD
    /// (Established) and the RBAC the e2e operator runs under.
    pub fn default_release(&'static self) -> &'static ChartRelease {
        static RELEASE_ONCE: OnceLock<ChartRelease> = OnceLock::new();
        RELEASE_ONCE.get_or_init(|| {
            self.helm_install(RELEASE, RELEASE_NAMESPACE, &[]).unwrap_or_else(|e| panic!("helm install: {e}"));
            self.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/groupbanpolicies.groupban.dev",
            ]);
            let token = self.service_account_token(RELEASE_NAMESPACE, SERVICE_ACCOUNT);
            let kubeconfig = self.dir.join("operator.kubeconfig");
            self.token_kubeconfig(&kubeconfig, &token, RELEASE_NAMESPACE);
            ChartRelease {
                namespace: RELEASE_NAMESPACE.into(),
                service_account: SERVICE_ACCOUNT.into(),
                kubeconfig,
                token,
            }
        })
    }

    /// A release of its own for one test namespace, with the namespaced
    /// values (`operator.watchNamespace`: a Role there, not a ClusterRole)
    /// and `crds.install=false` (the default release owns the CRD): the
    /// e2e suites run this way under `GROUPBAN_E2E_NAMESPACED_RELEASE`.
    pub fn namespaced_release(&'static self, watched: &str) -> ChartRelease {
        self.default_release();
        let release = format!("ns-{}", rand::random::<u32>());
        let namespace = format!("{release}-ops");
        let watch = format!("operator.watchNamespace={watched}");
        self.helm_install(&release, &namespace, &["crds.install=false", &watch])
            .unwrap_or_else(|e| panic!("helm install {release}: {e}"));
        let service_account = format!("{release}-groupban-operator");
        let token = self.service_account_token(&namespace, &service_account);
        let kubeconfig = self.dir.join(format!("{release}.kubeconfig"));
        self.token_kubeconfig(&kubeconfig, &token, &namespace);
        ChartRelease { namespace, service_account, kubeconfig, token }
    }

    /// Every audited request (Metadata level), oldest first.
    pub fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
    }

    /// The audited requests made by `user` (e.g.
    /// `system:serviceaccount:NS:NAME`), as (verb, requestURI, HTTP code).
    pub fn requests_by(&self, user: &str) -> Vec<AuditedRequest> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["stage"] == "ResponseComplete" && e["user"]["username"] == user)
            .map(|e| AuditedRequest {
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                uri: e["requestURI"].as_str().unwrap_or_default().to_string(),
                code: e["responseStatus"]["code"].as_u64().unwrap_or_default() as u16,
                resource: e["objectRef"]["resource"].as_str().unwrap_or_default().to_string(),
                subresource: e["objectRef"]["subresource"].as_str().unwrap_or_default().to_string(),
                namespace: e["objectRef"]["namespace"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }
}

/// One request as the API server's audit log recorded it.
#[derive(Debug, Clone)]
pub struct AuditedRequest {
    pub verb: String,
    pub uri: String,
    pub code: u16,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
}

/// A release of the chart, and a kubeconfig with its ServiceAccount's token.
#[derive(Clone)]
pub struct ChartRelease {
    pub namespace: String,
    pub service_account: String,
    pub kubeconfig: PathBuf,
    pub token: String,
}

/// Never prints the token: a failing assertion must not put a live
/// credential in the CI log.
impl std::fmt::Debug for ChartRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartRelease")
            .field("namespace", &self.namespace)
            .field("service_account", &self.service_account)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ChartRelease {
    /// The user name the API server sees for the operator.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.service_account)
    }
}

fn kubeconfig(url: &str, ca: &Path, user: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: {url}
      certificate-authority: {ca}
users:
  - name: test
    user:
      {user}
contexts:
  - name: test
    context: {{cluster: test, user: test, namespace: {namespace}}}
current-context: test
",
        ca = ca.display()
    )
}

fn tool_output(program: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("groupban-helm-cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("groupban-helm-config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("groupban-helm-data"))
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
    }
}
