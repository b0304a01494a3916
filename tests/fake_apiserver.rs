//! The fake Kubernetes API server behaves like a real one where the operator
//! depends on it. Every test drives it through real kube clients (or plain
//! HTTP for what kube cannot send), so most would pass against a real cluster.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use groupban_operator::crd::{GroupBanPolicy, GroupBanPolicySpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::GroupVersionKind;
use kube::core::PartialObjectMeta;
use kube::discovery::{Discovery, Scope};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use support::fake_apiserver::FakeApiServer;

const GBP_PATH: &str = "/apis/groupban.dev/v1alpha1/namespaces/default/groupbanpolicies";

async fn start() -> FakeApiServer {
    groupban_operator::install_crypto_provider();
    FakeApiServer::start().await
}

fn policy(name: &str, labels: &[(&str, &str)]) -> GroupBanPolicy {
    let spec = GroupBanPolicySpec {
        group_id: "@TGS#aGROUP".into(),
        unbanned_members: vec!["u1".into()],
        credentials_secret_ref: None,
        suspend: None,
        drift_check_interval: None,
    };
    let mut policy = GroupBanPolicy::new(name, spec);
    if !labels.is_empty() {
        policy.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    }
    policy
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    cm
}

fn api_code(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` until it is true, for at most 15 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn http() -> reqwest::Client {
    groupban_operator::install_crypto_provider();
    reqwest::Client::new()
}

/// Collects a raw watch's non-bookmark events until the stream ends.
async fn watch_events<K>(api: &Api<K>, wp: &WatchParams, from: &str) -> Vec<String>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    let stream = api.watch(wp, from).await.expect("watch starts");
    let events: Vec<WatchEvent<K>> = stream.try_collect().await.expect("watch stream");
    events
        .into_iter()
        .filter_map(|e| match e {
            WatchEvent::Added(o) => Some(format!("ADDED {}", o.meta().name.clone().unwrap_or_default())),
            WatchEvent::Modified(o) => Some(format!("MODIFIED {}", o.meta().name.clone().unwrap_or_default())),
            WatchEvent::Deleted(o) => Some(format!("DELETED {}", o.meta().name.clone().unwrap_or_default())),
            WatchEvent::Bookmark(_) => None,
            WatchEvent::Error(status) => Some(format!("ERROR {}", status.code)),
        })
        .collect()
}

/// The operator's whole CRUD path must behave as on a cluster, and
/// `metadata.generation` must move only with the spec: the controller
/// compares it with `status.observedGeneration` to know what is new.
#[tokio::test]
async fn a_policy_is_created_read_listed_and_deleted_and_its_generation_follows_only_the_spec() {
    let server = start().await;
    let client = server.client();
    let api: Api<GroupBanPolicy> = Api::namespaced(client.clone(), "default");

    let created = api.create(&PostParams::default(), &policy("p1", &[])).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();
    let got = api.get("p1").await.unwrap();
    assert_eq!(
        (got.metadata.uid, got.metadata.resource_version),
        (created.metadata.uid.clone(), created.metadata.resource_version.clone())
    );
    let (code, reason) = api_code(api.create(&PostParams::default(), &policy("p1", &[])).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let other_ns: Api<GroupBanPolicy> = Api::namespaced(client.clone(), "other");
    other_ns.create(&PostParams::default(), &policy("p2", &[])).await.unwrap();
    let names =
        |list: kube::core::ObjectList<GroupBanPolicy>| list.items.iter().map(|p| p.name_any()).collect::<Vec<_>>();
    assert_eq!(names(api.list(&ListParams::default()).await.unwrap()), ["p1"]);
    let everywhere: Api<GroupBanPolicy> = Api::all(client.clone());
    let all = everywhere.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.metadata.resource_version, Some(server.resource_version().to_string()));
    assert_eq!(names(all), ["p1", "p2"]);

    let spec_change = Patch::Merge(json!({"spec": {"unbannedMembers": ["u1", "u2"]}}));
    let patched = api.patch("p1", &PatchParams::default(), &spec_change).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert!(patched.resource_version().unwrap().parse::<u64>().unwrap() > rv1);

    let status = Patch::Merge(json!({"status": {"observedGeneration": 2}}));
    let patched = api.patch_status("p1", &PatchParams::default(), &status).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.status.as_ref().unwrap().observed_generation, Some(2));

    let labels = Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}}));
    let patched = api.patch("p1", &PatchParams::default(), &labels).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert_eq!(patched.labels().get("team").map(String::as_str), Some("a"));

    // The main resource ignores status; the status subresource ignores the spec.
    let sneaky_status = Patch::Merge(json!({"status": {"observedGeneration": 99}}));
    let patched = api.patch("p1", &PatchParams::default(), &sneaky_status).await.unwrap();
    assert_eq!(patched.status.as_ref().unwrap().observed_generation, Some(2));
    assert!(!server.requests().last().unwrap().changed);
    let sneaky_spec = Patch::Merge(json!({"spec": {"groupId": "@TGS#other"}, "status": {"observedGeneration": 3}}));
    let patched = api.patch_status("p1", &PatchParams::default(), &sneaky_spec).await.unwrap();
    assert_eq!(patched.spec.group_id, "@TGS#aGROUP");
    assert_eq!(patched.status.as_ref().unwrap().observed_generation, Some(3));
    assert_eq!(server.status_writes(), 2);

    let deleted = api.delete("p1", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().map(|p| p.name_any()).as_deref(), Some("p1"));
    assert_eq!(api_code(api.get("p1").await), (404, "NotFound".to_string()));
    assert!(server.get("groupbanpolicies", "default", "p1").is_none());
    assert!(server.get("groupbanpolicies", "other", "p2").is_some());
    server.stop().await;
}

/// The operator writes its status with server-side apply on every pass; an
/// unchanged status must not bump the resourceVersion or emit a watch event,
/// or the controller would wake itself forever.
#[tokio::test]
async fn applying_the_same_status_twice_changes_nothing_the_second_time() {
    let server = start().await;
    let api: Api<GroupBanPolicy> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &policy("p1", &[])).await.unwrap();

    let params = PatchParams::apply("groupban-operator").force();
    let apply = Patch::Apply(json!({
        "apiVersion": "groupban.dev/v1alpha1",
        "kind": "GroupBanPolicy",
        "status": {"observedGeneration": 1, "unbannedMembers": ["u1"]}
    }));
    let first = api.patch_status("p1", &params, &apply).await.unwrap();
    assert_eq!(first.status.as_ref().unwrap().unbanned_members, ["u1"]);
    let request = server.requests().last().unwrap().clone();
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.path, format!("{GBP_PATH}/p1/status"));
    assert_eq!(request.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(request.query_param("fieldManager").as_deref(), Some("groupban-operator"));
    assert_eq!(request.query_param("force").as_deref(), Some("true"));
    assert!(request.changed);

    let rv = first.resource_version().unwrap();
    let watch = {
        let api = api.clone();
        let rv = rv.clone();
        tokio::spawn(async move { watch_events(&api, &WatchParams::default().timeout(2), &rv).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = api.patch_status("p1", &params, &apply).await.unwrap();
    assert_eq!(second.resource_version().unwrap(), rv);
    let request = server.requests().last().unwrap().clone();
    assert_eq!((request.status, request.changed), (200, false));
    assert_eq!(watch.await.unwrap(), Vec::<String>::new(), "a no-op apply must not reach watchers");
    assert_eq!(server.status_writes(), 1);

    // One manager owns the whole status: a field it stops applying is removed.
    let smaller = Patch::Apply(json!({
        "apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy", "status": {"observedGeneration": 1}
    }));
    let third = api.patch_status("p1", &params, &smaller).await.unwrap();
    assert!(third.status.unwrap().unbanned_members.is_empty());
    server.stop().await;
}

/// Optimistic concurrency: a replace carrying an old resourceVersion must be
/// refused, as a cluster refuses it, so conflicts are tested for real.
#[tokio::test]
async fn a_replace_with_a_stale_resource_version_gets_409_conflict() {
    let server = start().await;
    let api: Api<GroupBanPolicy> = Api::namespaced(server.client(), "default");
    let stale = api.create(&PostParams::default(), &policy("p1", &[])).await.unwrap();
    api.patch("p1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))).await.unwrap();

    let mut edited = stale.clone();
    edited.spec.unbanned_members.push("u2".into());
    let (code, reason) = api_code(api.replace("p1", &PostParams::default(), &edited).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // Custom resources refuse an unconditional update.
    edited.metadata.resource_version = None;
    assert_eq!(api_code(api.replace("p1", &PostParams::default(), &edited).await).0, 422);

    let mut fresh = api.get("p1").await.unwrap();
    fresh.spec.unbanned_members.push("u2".into());
    let replaced = api.replace("p1", &PostParams::default(), &fresh).await.unwrap();
    assert_eq!(replaced.spec.unbanned_members, ["u1", "u2"]);
    assert_eq!(replaced.metadata.generation, Some(2));
    // PUT on /status changes only the status.
    let mut with_status = replaced.clone();
    with_status.spec.group_id = "@TGS#ignored".into();
    with_status.status =
        Some(groupban_operator::crd::GroupBanPolicyStatus { observed_generation: Some(2), ..Default::default() });
    let stored = api.replace_status("p1", &PostParams::default(), &with_status).await.unwrap();
    assert_eq!((stored.spec.group_id.as_str(), stored.metadata.generation), ("@TGS#aGROUP", Some(2)));
    assert_eq!(stored.status.unwrap().observed_generation, Some(2));
    // A merge patch with a stale resourceVersion is refused too.
    let stale_patch = Patch::Merge(json!({"metadata": {"resourceVersion": stale.resource_version()}, "spec": {}}));
    assert_eq!(api_code(api.patch("p1", &PatchParams::default(), &stale_patch).await).0, 409);
    server.stop().await;
}

/// The operator's controller is a watcher with a reflector; it must see only
/// the objects its selector matches, see objects leave and enter the
/// selection, and recover from a compacted history by re-listing.
#[tokio::test]
async fn a_label_selected_watcher_and_reflector_converge_through_relabels_and_compaction() {
    let server = start().await;
    let api: Api<GroupBanPolicy> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    api.create(&pp, &policy("a1", &[("team", "a")])).await.unwrap();
    api.create(&pp, &policy("b1", &[("team", "b")])).await.unwrap();

    let (reader, writer) = reflector::store();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let task = {
        let log = log.clone();
        let stream = reflector(writer, watcher(api.clone(), watcher::Config::default().labels("team=a")));
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.default_backoff());
            while let Some(event) = stream.next().await {
                let line = match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => format!("apply {}", p.name_any()),
                    Ok(watcher::Event::Delete(p)) => format!("delete {}", p.name_any()),
                    Ok(watcher::Event::Init) => "init".into(),
                    Ok(watcher::Event::InitDone) => "init-done".into(),
                    Err(watcher::Error::WatchError(status)) => format!("error {}", status.code),
                    Err(other) => format!("failed {other}"),
                };
                log.lock().unwrap().push(line);
            }
        })
    };
    let names = move || reader.state().iter().map(|p| p.name_any()).collect::<BTreeSet<_>>();
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    eventually("initial list", || names() == set(&["a1"])).await;
    let list_request = server.requests().into_iter().find(|r| r.method == "GET" && !r.is_watch()).unwrap();
    assert_eq!(list_request.query_param("limit").as_deref(), Some("500"));
    assert_eq!(list_request.query_param("labelSelector").as_deref(), Some("team=a"));

    api.create(&pp, &policy("a2", &[("team", "a")])).await.unwrap();
    api.create(&pp, &policy("c1", &[("team", "c")])).await.unwrap();
    eventually("a2 added", || names() == set(&["a1", "a2"])).await;
    let relabel = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    api.patch("a2", &PatchParams::default(), &relabel("b")).await.unwrap();
    eventually("a2 left the selection", || names() == set(&["a1"])).await;
    api.patch("b1", &PatchParams::default(), &relabel("a")).await.unwrap();
    eventually("b1 entered the selection", || names() == set(&["a1", "b1"])).await;
    api.delete("a1", &DeleteParams::default()).await.unwrap();
    eventually("a1 deleted", || names() == set(&["b1"])).await;
    {
        let log = log.lock().unwrap();
        for expected in ["apply a2", "delete a2", "apply b1", "delete a1"] {
            assert!(log.contains(&expected.to_string()), "{expected:?} missing from {log:?}");
        }
        assert!(!log.iter().any(|l| l.ends_with(" c1")), "c1 never matched: {log:?}");
    }

    // While the watcher is disconnected and cannot reconnect, history moves on
    // and is compacted: its resume gets 410 and it re-lists.
    server.fail_requests(Some("GET"), "watch=true", 500, 1_000_000);
    server.drop_watches();
    api.create(&pp, &policy("a3", &[("team", "a")])).await.unwrap();
    api.delete("b1", &DeleteParams::default()).await.unwrap();
    server.compact();
    server.clear_requests();
    server.clear_failures();
    eventually("converged after compaction", || names() == set(&["a3"])).await;
    assert!(log.lock().unwrap().contains(&"error 410".to_string()), "{:?}", log.lock().unwrap());
    assert!(server.requests().iter().any(|r| r.method == "GET" && !r.is_watch()), "re-listed");
    task.abort();
    server.stop().await;
}

/// The operator watches Secrets as metadata only so it never holds their
/// values; the fake must answer PartialObjectMetadata without `data`.
#[tokio::test]
async fn a_metadata_watcher_on_secrets_never_receives_their_data() {
    let server = start().await;
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let mut secret = Secret::default();
    secret.metadata.name = Some("creds".into());
    secret.data = Some([("secretKey".to_string(), ByteString(b"hunter2-value".to_vec()))].into());
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let encoded = "aHVudGVyMi12YWx1ZQ=="; // base64 of hunter2-value
    assert_eq!(server.get("secrets", "default", "creds").unwrap()["data"]["secretKey"], encoded);

    // kube 5 deprecates `metadata_watcher` in favour of a watcher on
    // `Api<PartialObjectMeta<K>>`, which sends the same metadata-only requests.
    let metas: Api<PartialObjectMeta<Secret>> = Api::namespaced(server.client(), "default");
    let mut stream = std::pin::pin!(watcher(metas, watcher::Config::default()).default_backoff().applied_objects());
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.name_any(), "creds");
    secrets
        .patch("creds", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"secretKey": "changed-value"}})))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_ne!(second.resource_version(), first.resource_version());

    let requests = server.requests();
    let list = requests.iter().find(|r| r.method == "GET" && !r.is_watch()).unwrap();
    assert_eq!(list.accept.as_deref(), Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"));
    let watch = requests.iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(watch.accept.as_deref(), Some("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"));

    // The deprecated `metadata_watcher` still works and sends the same headers.
    server.clear_requests();
    #[allow(deprecated)]
    let old_style = kube::runtime::metadata_watcher(secrets.clone(), watcher::Config::default());
    let mut old_style = std::pin::pin!(old_style.default_backoff().applied_objects());
    let meta = tokio::time::timeout(Duration::from_secs(10), old_style.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(meta.name_any(), "creds");
    let old_list = server.requests().into_iter().find(|r| r.method == "GET" && !r.is_watch()).unwrap();
    assert_eq!(old_list.accept, list.accept);

    // What goes over the wire, with the same Accept headers: no data at all.
    let base = format!("{}/api/v1/namespaces/default/secrets", server.url());
    let list_text =
        http().get(&base).header("accept", list.accept.clone().unwrap()).send().await.unwrap().text().await.unwrap();
    let list_json: Value = serde_json::from_str(&list_text).unwrap();
    assert_eq!(list_json["kind"], "PartialObjectMetadataList");
    assert_eq!(list_json["items"][0]["kind"], "PartialObjectMetadata");
    assert!(!list_text.contains("\"data\"") && !list_text.contains(encoded), "{list_text}");
    let mut response = http()
        .get(format!("{base}?watch=true&resourceVersion=1"))
        .header("accept", watch.accept.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while text.matches('\n').count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await.unwrap().unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("\"PartialObjectMetadata\""), "{text}");
    assert!(!text.contains("\"data\"") && !text.contains(encoded), "{text}");
    server.stop().await;
}

/// The operator reports progress as Events through kube's Recorder; the fake
/// must accept its create and its series patch at events.k8s.io/v1.
#[tokio::test]
async fn the_event_recorder_publishes_events_under_events_k8s_io_v1() {
    let server = start().await;
    let client = server.client();
    let api: Api<GroupBanPolicy> = Api::namespaced(client.clone(), "default");
    let created = api.create(&PostParams::default(), &policy("p1", &[])).await.unwrap();
    let reporter = Reporter { controller: "groupban-operator".into(), instance: Some("pod-1".into()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "Unbanned".into(),
        note: Some("unbanned 1 member".into()),
        action: "Unban".into(),
        secondary: None,
    };
    recorder.publish(&event, &created.object_ref(&())).await.unwrap();
    let post = server.requests().last().unwrap().clone();
    assert_eq!((post.method.as_str(), post.status), ("POST", 201));
    assert_eq!(post.path, "/apis/events.k8s.io/v1/namespaces/default/events");

    recorder.publish(&event, &created.object_ref(&())).await.unwrap();
    let patch = server.requests().last().unwrap().clone();
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.content_type.as_deref(), Some("application/merge-patch+json"));

    let events: Api<K8sEvent> = Api::namespaced(client, "default");
    let stored = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    assert_eq!(stored.reason.as_deref(), Some("Unbanned"));
    assert_eq!(stored.reporting_controller.as_deref(), Some("groupban-operator"));
    assert_eq!(stored.regarding.as_ref().unwrap().name.as_deref(), Some("p1"));
    assert_eq!(stored.regarding.as_ref().unwrap().kind.as_deref(), Some("GroupBanPolicy"));
    assert_eq!(stored.series.as_ref().unwrap().count, 2);
    server.stop().await;
}

/// `kubectl api-resources` and kube's Discovery must find the CRD's resource
/// with its scope and status subresource.
#[tokio::test]
async fn discovery_finds_groupbanpolicies_and_the_built_in_kinds() {
    let server = start().await;
    let client = server.client();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let gvk = GroupVersionKind::gvk("groupban.dev", "v1alpha1", "GroupBanPolicy");
    let (resource, caps) = discovery.resolve_gvk(&gvk).expect("GroupBanPolicy discovered");
    assert_eq!(resource.plural, "groupbanpolicies");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(sub, _)| sub.plural == "status"));
    for (group, version, kind) in
        [("", "v1", "Secret"), ("coordination.k8s.io", "v1", "Lease"), ("events.k8s.io", "v1", "Event")]
    {
        assert!(discovery.resolve_gvk(&GroupVersionKind::gvk(group, version, kind)).is_some(), "{kind}");
    }
    // Aggregated discovery (one request per /api and /apis), as kubectl uses.
    let aggregated = Discovery::new(client.clone()).run_aggregated().await.unwrap();
    let (resource, caps) = aggregated.resolve_gvk(&gvk).expect("GroupBanPolicy in aggregated discovery");
    assert_eq!((resource.plural.as_str(), caps.scope), ("groupbanpolicies", Scope::Namespaced));
    assert!(aggregated.resolve_gvk(&GroupVersionKind::gvk("", "v1", "Secret")).is_some());
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let resources = client.list_api_group_resources("groupban.dev/v1alpha1").await.unwrap();
    let gbp = resources.resources.iter().find(|r| r.name == "groupbanpolicies").unwrap();
    assert_eq!(gbp.short_names.as_deref(), Some(&["gbp".to_string()][..]));
    server.stop().await;
}

/// Failure injection answers the next matching requests with an error and
/// then stops; kube retries 503 by itself, which tests must account for.
#[tokio::test]
async fn injected_failures_answer_the_next_matching_requests_and_then_stop() {
    let server = start().await;
    let api: Api<GroupBanPolicy> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &policy("p1", &[])).await.unwrap();

    server.fail_requests(Some("GET"), "/groupbanpolicies/p1", 500, 1);
    assert_eq!(api_code(api.get("p1").await), (500, "InternalError".to_string()));
    api.get("p1").await.unwrap();

    server.fail_requests(Some("PATCH"), "/status", 409, 1);
    let status = Patch::Merge(json!({"status": {"observedGeneration": 1}}));
    assert_eq!(api_code(api.patch_status("p1", &PatchParams::default(), &status).await).0, 409);
    assert!(server.get("groupbanpolicies", "default", "p1").unwrap().get("status").is_none(), "no effect");

    // kube's client retries 429, 503 and 504 on its own.
    server.clear_requests();
    server.fail_requests(None, "/groupbanpolicies/p1", 503, 2);
    api.get("p1").await.unwrap();
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    server.stop().await;
}

/// A watch resumed from a compacted resourceVersion gets a 410 ERROR event,
/// which is what makes kube's watcher re-list.
#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_a_410_error_event() {
    let server = start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let created = api.create(&PostParams::default(), &config_map("c1", &[])).await.unwrap();
    let rv = created.resource_version().unwrap();
    api.patch("c1", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.unwrap();
    api.create(&PostParams::default(), &config_map("c2", &[])).await.unwrap();
    api.delete("c1", &DeleteParams::default()).await.unwrap();

    let elsewhere: Api<ConfigMap> = Api::namespaced(server.client(), "elsewhere");
    elsewhere.create(&PostParams::default(), &config_map("x1", &[])).await.unwrap();

    let replay = watch_events(&api, &WatchParams::default().timeout(1), &rv).await;
    assert_eq!(replay, ["MODIFIED c1", "ADDED c2", "DELETED c1"]);
    let from_zero = watch_events(&api, &WatchParams::default().timeout(1), "0").await;
    assert_eq!(from_zero, ["ADDED c2"]);

    server.compact();
    assert_eq!(watch_events(&api, &WatchParams::default().timeout(1), &rv).await, ["ERROR 410"]);
    let current = server.resource_version().to_string();
    assert!(watch_events(&api, &WatchParams::default().timeout(1), &current).await.is_empty());
    server.stop().await;
}

/// Bookmarks, `timeoutSeconds`, dropped connections and a stopped server
/// all end or feed a watch as on a cluster.
#[tokio::test]
async fn watches_get_bookmarks_and_end_on_timeout_drop_and_stop() {
    let server = start().await;
    server.set_bookmark_interval(Duration::from_millis(200));
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &config_map("c1", &[])).await.unwrap();
    let current = server.resource_version().to_string();

    let mut stream = api.watch(&WatchParams::default(), &current).await.unwrap().boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Bookmark(bookmark)) => assert_eq!(bookmark.metadata.resource_version, current),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    server.drop_watches();
    let rest: Vec<_> =
        tokio::time::timeout(Duration::from_secs(5), stream.try_collect::<Vec<_>>()).await.unwrap().unwrap();
    assert!(rest.iter().all(|e| matches!(e, WatchEvent::Bookmark(_))));

    let started = std::time::Instant::now();
    let events = watch_events(&api, &WatchParams::default().timeout(1), &current).await;
    assert!(events.is_empty());
    assert!(started.elapsed() < Duration::from_secs(3));

    let stream = api.watch(&WatchParams::default().disable_bookmarks(), &current).await.unwrap();
    let collected = tokio::spawn(async move { stream.try_collect::<Vec<_>>().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), collected).await.expect("stop ends the watch");
    assert!(ended.unwrap().unwrap().is_empty());
}

/// Paged lists (the watcher asks for 500 at a time) must return every
/// object once, and an expired continue token must get 410.
#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let server = start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &config_map(&format!("c{i}"), &[])).await.unwrap();
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(2);
    let mut pages = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    server.compact();
    let token = first.metadata.continue_.unwrap();
    let (code, reason) = api_code(api.list(&ListParams::default().limit(2).continue_token(&token)).await);
    assert_eq!((code, reason.as_str()), (410, "Expired"));
    server.stop().await;
}

/// Every label selector operator the operator or a user might use.
#[tokio::test]
async fn label_and_field_selectors_filter_lists_like_a_cluster() {
    let server = start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let pp = PostParams::default();
    api.create(&pp, &config_map("a", &[("env", "prod"), ("tier", "web")])).await.unwrap();
    api.create(&pp, &config_map("b", &[("env", "dev")])).await.unwrap();
    api.create(&pp, &config_map("c", &[])).await.unwrap();
    let select = |selector: &'static str| {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default().labels(selector)).await.unwrap();
            list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>().join(",")
        }
    };
    assert_eq!(select("env=prod").await, "a");
    assert_eq!(select("env==dev").await, "b");
    assert_eq!(select("env!=prod").await, "b,c");
    assert_eq!(select("env").await, "a,b");
    assert_eq!(select("!env").await, "c");
    assert_eq!(select("env in (prod, dev)").await, "a,b");
    assert_eq!(select("env notin (prod)").await, "b,c");
    assert_eq!(select("env=prod,tier=web").await, "a");
    assert_eq!(select("env=prod,tier=db").await, "");
    let fields = api.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();
    assert_eq!(fields.items.len(), 1);
    let not_b = api.list(&ListParams::default().fields("metadata.name!=b,metadata.namespace=default")).await.unwrap();
    assert_eq!(not_b.items.len(), 2);
    assert_eq!(api_code(api.list(&ListParams::default().labels("env in prod")).await).0, 400);
    assert_eq!(api_code(api.list(&ListParams::default().fields("data.k=v")).await).0, 400);
    server.stop().await;
}

/// The patch types kube cannot all send here (its jsonpatch feature is off),
/// checked over plain HTTP: JSON patch, merge, strategic merge, apply
/// without fieldManager, apply creating an object, unknown media type.
#[tokio::test]
async fn patch_types_and_server_side_apply_rules_follow_the_api_conventions() {
    let server = start().await;
    let api: Api<GroupBanPolicy> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &policy("p1", &[])).await.unwrap();
    let url = format!("{}{GBP_PATH}/p1", server.url());
    let send = |content_type: &'static str, url: String, body: Value| async move {
        let response = http()
            .patch(url)
            .header("content-type", content_type)
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };

    let ops = json!([
        {"op": "test", "path": "/spec/groupId", "value": "@TGS#aGROUP"},
        {"op": "add", "path": "/spec/unbannedMembers/-", "value": "u2"},
        {"op": "replace", "path": "/spec/groupId", "value": "@TGS#b"},
        {"op": "add", "path": "/metadata/labels", "value": {"a/b": "c"}},
        {"op": "remove", "path": "/metadata/labels/a~1b"}
    ]);
    let (code, body) = send("application/json-patch+json", url.clone(), ops).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["unbannedMembers"], json!(["u1", "u2"]));
    assert_eq!(body["spec"]["groupId"], "@TGS#b");
    assert_eq!(body["metadata"]["labels"], json!({}));
    let failing = json!([{"op": "test", "path": "/spec/groupId", "value": "nope"}]);
    assert_eq!(send("application/json-patch+json", url.clone(), failing).await.0, 422);

    let (code, body) =
        send("application/strategic-merge-patch+json", url.clone(), json!({"spec": {"suspend": true}})).await;
    assert_eq!((code, body["spec"]["suspend"].clone()), (200, json!(true)));
    let (code, body) = send("application/merge-patch+json", url.clone(), json!({"spec": {"suspend": null}})).await;
    assert_eq!((code, body["spec"].get("suspend")), (200, None));

    let applied = json!({"apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy", "spec": {"suspend": true}});
    let (code, body) = send("application/apply-patch+yaml", url.clone(), applied.clone()).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, body) = send("application/apply-patch+yaml", format!("{url}?fieldManager=m"), applied).await;
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["suspend"], true);
    assert_eq!(body["spec"]["unbannedMembers"], json!(["u1", "u2"]), "apply merges into the stored object");

    let status_only = json!({"apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy", "status": {}});
    let missing = format!("{}{GBP_PATH}/p9/status?fieldManager=m", server.url());
    assert_eq!(send("application/apply-patch+yaml", missing, status_only).await.0, 404);
    let new = json!({"apiVersion": "groupban.dev/v1alpha1", "kind": "GroupBanPolicy",
        "spec": {"groupId": "g", "unbannedMembers": []}, "status": {"observedGeneration": 5}});
    let (code, body) =
        send("application/apply-patch+yaml", format!("{}{GBP_PATH}/p9?fieldManager=m", server.url()), new).await;
    assert_eq!(code, 201);
    assert_eq!(body["metadata"]["generation"], 1);
    assert!(body.get("status").is_none(), "status is ignored on the main resource");

    let (code, body) = send("text/plain", url, json!({})).await;
    assert_eq!((code, body["kind"].as_str()), (415, Some("Status")));
    server.stop().await;
}

/// Finalizers: a delete only marks the object until its finalizers are
/// removed, then it is gone with a DELETED event.
#[tokio::test]
async fn deleting_an_object_with_finalizers_waits_until_they_are_removed() {
    let server = start().await;
    let api: Api<GroupBanPolicy> = Api::namespaced(server.client(), "default");
    let mut p = policy("p1", &[]);
    p.metadata.finalizers = Some(vec!["groupban.dev/cleanup".into()]);
    let created = api.create(&PostParams::default(), &p).await.unwrap();
    let rv = created.resource_version().unwrap();

    api.delete("p1", &DeleteParams::default()).await.unwrap();
    let marked = api.get("p1").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    api.patch("p1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert_eq!(api_code(api.get("p1").await).0, 404);
    let events = watch_events(&api, &WatchParams::default().timeout(1), &rv).await;
    assert_eq!(events, ["MODIFIED p1", "DELETED p1"]);
    server.stop().await;
}

/// The operator can be pointed at the fake through a kubeconfig file, and
/// generateName, unknown resources and oversized bodies answer as on a cluster.
#[tokio::test]
async fn a_written_kubeconfig_works_and_odd_requests_get_kubernetes_statuses() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let mut cm = ConfigMap::default();
    cm.metadata.generate_name = Some("gen-".into());
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    let name = created.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(server.get("configmaps", "default", &name).is_some());

    // Namespaces are cluster-scoped.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(server.client());
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some("team-a".into());
    let created = namespaces.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.metadata.namespace, None);
    assert!(server.get("namespaces", "", "team-a").is_some());

    let response = http().get(format!("{}/apis/groupban.dev/v1alpha1/widgets", server.url())).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let status: Value = response.json().await.unwrap();
    assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("NotFound")));

    let huge = vec![b' '; 4 * 1024 * 1024];
    let response = http()
        .post(format!("{}/api/v1/namespaces/default/configmaps", server.url()))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    server.stop().await;
}

/// kube's streaming-list mode (`sendInitialEvents=true`) gets the current
/// objects as ADDED events and the initial-events-end bookmark, then changes.
#[tokio::test]
async fn a_streaming_list_watcher_gets_the_initial_state_then_changes() {
    let server = start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &config_map("c1", &[])).await.unwrap();
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default().streaming_lists()));
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        while stream.next().await.is_some() {}
    });
    let names = move || {
        let mut names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
        names.sort();
        names.join(",")
    };
    eventually("initial state", || names() == "c1").await;
    let watch = server.requests().into_iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(watch.query_param("sendInitialEvents").as_deref(), Some("true"));
    api.create(&PostParams::default(), &config_map("c2", &[])).await.unwrap();
    eventually("c2 added", || names() == "c1,c2").await;
    assert!(!server.requests().iter().any(|r| r.method == "GET" && !r.is_watch()), "no list request");
    task.abort();
    server.stop().await;
}
