//! `get`: policies as a table (`-o wide` for more), or as YAML or JSON, and
//! `--watch` for a row each time one changes.

use std::collections::HashMap;

use futures::TryStreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::errors::ClusterError;
use super::table::{self, Layout};
use crate::crd::GroupBanPolicy;

/// Which policies: one by name, or those matching a label selector in a
/// namespace (`None`: all namespaces).
#[derive(Debug, Clone)]
pub struct Query {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub selector: Option<String>,
}

impl Query {
    pub fn api(&self, client: Client) -> Api<GroupBanPolicy> {
        match &self.namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        }
    }

    /// What errors name: `NAMESPACE/NAME`, or where a list looked.
    pub fn object(&self) -> String {
        let place = self.namespace.as_deref().unwrap_or("*");
        match &self.name {
            Some(name) => format!("{place}/{name}"),
            None => format!("list in namespace {place}"),
        }
    }

    fn field_selector(&self) -> Option<String> {
        self.name.as_ref().map(|name| format!("metadata.name={name}"))
    }
}

/// The policies the query names, sorted by namespace and name. A name that
/// is not there is an error, as with kubectl.
pub async fn list(client: Client, query: &Query) -> Result<Vec<GroupBanPolicy>, ClusterError> {
    let api = query.api(client);
    if let (Some(name), Some(_)) = (&query.name, &query.namespace) {
        return api.get(name).await.map(|p| vec![p]).map_err(|e| ClusterError::from_kube("get", &query.object(), e));
    }
    let mut params = ListParams::default();
    if let Some(selector) = &query.selector {
        params = params.labels(selector);
    }
    if let Some(fields) = query.field_selector() {
        params = params.fields(&fields);
    }
    let mut policies = Vec::new();
    // Pages of 500, as kubectl asks: a large fleet is not one response.
    params = params.limit(500);
    loop {
        let page = api.list(&params).await.map_err(|e| ClusterError::from_kube("list", &query.object(), e))?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        policies.extend(page.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    if policies.is_empty() && query.name.is_some() {
        return Err(ClusterError::NotFound { object: query.object() });
    }
    policies.sort_by_key(|p| (p.namespace(), p.name_any()));
    Ok(policies)
}

/// The table of `policies`, header first.
pub fn render_table(policies: &[GroupBanPolicy], layout: Layout, now: Timestamp) -> String {
    let mut rows = vec![table::header(layout)];
    rows.extend(policies.iter().map(|policy| table::row(policy, layout, now)));
    table::render(&rows)
}

/// A policy as `-o yaml|json` shows it: without managedFields, as kubectl
/// shows them by default.
pub fn shown(policy: &GroupBanPolicy) -> Value {
    let mut policy = policy.clone();
    policy.metadata.managed_fields = None;
    serde_json::to_value(&policy).unwrap_or(Value::Null)
}

/// The objects as kubectl prints them: one object for a name, else a List.
pub fn document(policies: &[GroupBanPolicy], single: bool) -> Value {
    match (single, policies) {
        (true, [policy]) => shown(policy),
        _ => json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": ""},
            "items": policies.iter().map(shown).collect::<Vec<_>>(),
        }),
    }
}

/// `--watch`: the table, then a row for each change (a policy seen at a
/// resourceVersion already printed is not printed again, so a relist
/// after a lost watch repeats nothing), until `stop` resolves or `print`
/// says the output is gone (false).
pub async fn watch(
    client: Client,
    query: &Query,
    layout: Layout,
    mut print: impl FnMut(&str) -> bool,
    stop: impl Future<Output = ()>,
) -> Result<(), ClusterError> {
    let policies = list(client.clone(), query).await?;
    let mut printed: HashMap<String, String> = HashMap::new();
    let now = Timestamp::now();
    let mut rows = vec![table::header(layout)];
    for policy in &policies {
        printed.insert(policy.uid().unwrap_or_default(), policy.resource_version().unwrap_or_default());
        rows.push(table::row(policy, layout, now));
    }
    // Widths are fixed by the first table; later rows keep them where they fit.
    if !print(&table::render(&rows)) {
        return Ok(());
    }
    let widths = table::widths(&rows);

    let mut config = watcher::Config::default();
    if let Some(selector) = &query.selector {
        config = config.labels(selector);
    }
    if let Some(fields) = query.field_selector() {
        config = config.fields(&fields);
    }
    let changes = watcher(query.api(client), config).default_backoff().applied_objects();
    let mut changes = std::pin::pin!(changes);
    let mut stop = std::pin::pin!(stop);
    loop {
        let policy = tokio::select! {
            _ = &mut stop => return Ok(()),
            next = changes.try_next() => match next {
                Ok(Some(policy)) => policy,
                Ok(None) => return Ok(()),
                Err(error) => {
                    // The watcher retries on its backoff; say why rows pause.
                    eprintln!("warning: watching GroupBanPolicies: {}", crate::error_chain(&error));
                    continue;
                }
            },
        };
        let version = policy.resource_version().unwrap_or_default();
        if printed.insert(policy.uid().unwrap_or_default(), version.clone()).as_ref() == Some(&version) {
            continue;
        }
        let row = table::row(&policy, layout, Timestamp::now());
        if !print(&table::line(&row, &widths)) {
            return Ok(());
        }
    }
}
