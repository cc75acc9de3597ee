//! Logs at the query root: search, histograms and patterns, merged from every worker.
//!
//! Each worker mines its own log patterns, so a pattern id means something on one worker
//! only. The root's pattern listing therefore names each pattern by an id of its own — the
//! worker's id with a tag of the worker's node in the high 16 bits — and a search, histogram
//! or listing filtered by such an id is asked of every worker by the pattern's template
//! (`template=`), which the tagged worker is asked for first. An untagged id is passed on as
//! it is: with `service=` it is unambiguous (a service lives on one worker).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::Json;
use serde_json::Value;

use super::merge::{merge_histograms, merge_patterns, merge_search};
use super::{Answer, Params, Root, each_worker_named, gather, limit, members, pin_range};
use crate::api::ApiError;
use crate::cluster::lease::Member;

/// Bits of a root pattern id below the node's tag.
const TAG_SHIFT: u32 = 48;

/// The tag of `node` in root pattern ids: never 0 (an untagged id).
fn tag(node: &str) -> u64 {
    crate::storage::convert::fnv1a(node.bytes()) % 0xffff + 1
}

/// `id` of `node`'s patterns as the root names it.
fn root_id(node: &str, id: u64) -> u64 {
    (tag(node) << TAG_SHIFT) | (id & ((1 << TAG_SHIFT) - 1))
}

/// A `pattern=` filter with a root id becomes `template=`, the template the tagged worker
/// gives its pattern now.
async fn resolve_pattern(
    root: &Root,
    params: &mut HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(id) = params.get("pattern").and_then(|p| p.parse::<u64>().ok()) else {
        return Ok(());
    };
    let node_tag = id >> TAG_SHIFT;
    if node_tag == 0 {
        return Ok(());
    }
    let members = members(root).await?;
    let tagged: Vec<&Member> = members
        .iter()
        .map(|(m, _)| m)
        .filter(|m| tag(&m.node) == node_tag)
        .collect();
    let api = match tagged.as_slice() {
        [one] => one.api.clone(),
        [] => None,
        _ => {
            return Err(ApiError::Conflict(format!(
                "pattern {id}: two workers' names share its tag; filter by template= instead"
            )));
        }
    }
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "pattern {id} was named by a worker no longer in the cluster: list the patterns again"
        ))
    })?;
    let local = id & ((1 << TAG_SHIFT) - 1);
    let mut request = root.http.get(format!("{api}/api/v1/logs/patterns/{local}"));
    if let Some(auth) = headers.get(AUTHORIZATION) {
        request = request.header(AUTHORIZATION, auth.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| ApiError::BadGateway(format!("{api}: {e}")))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| ApiError::BadGateway(format!("{api}: {e}")))?;
    let template = match body["template"].as_str() {
        Some(t) if status.is_success() => t.to_string(),
        _ if status == axum::http::StatusCode::NOT_FOUND => {
            return Err(ApiError::NotFound(format!(
                "no pattern {id} (evicted from its worker's miner)"
            )));
        }
        _ => return Err(ApiError::BadGateway(format!("{api} answered {status}: {body}"))),
    };
    params.remove("pattern");
    params.insert("template".into(), template);
    Ok(())
}

pub(super) async fn search(State(root): State<Arc<Root>>, headers: HeaderMap, Query(mut params): Params) -> Answer {
    resolve_pattern(&root, &mut params, &headers).await?;
    let limit = limit(&params, 100);
    gather(&root, "/api/v1/logs/search", params, &headers, |b| {
        merge_search(b, limit)
    })
    .await
}

pub(super) async fn histogram(State(root): State<Arc<Root>>, headers: HeaderMap, Query(mut params): Params) -> Answer {
    resolve_pattern(&root, &mut params, &headers).await?;
    let now_ms = crate::timeutil::now_ns() / 1_000_000;
    params
        .entry("start".into())
        .or_insert_with(|| now_ms.saturating_sub(3_600_000).to_string());
    gather(&root, "/api/v1/logs/histogram", params, &headers, merge_histograms).await
}

/// Every worker's patterns, merged by template, each named by a root id.
pub(super) async fn patterns(State(root): State<Arc<Root>>, headers: HeaderMap, Query(mut params): Params) -> Answer {
    resolve_pattern(&root, &mut params, &headers).await?;
    let limit = limit(&params, 100);
    let query = super::encode(&pin_range(params));
    let authorization = headers.get(AUTHORIZATION).cloned();
    let named = each_worker_named(&root, authorization, false, |http, api| {
        http.get(format!("{api}/api/v1/logs/patterns?{query}"))
    })
    .await?;
    let bodies = named
        .into_iter()
        .map(|(node, mut body)| {
            for p in body["patterns"].as_array_mut().into_iter().flatten() {
                if let Some(id) = p["pattern_id"].as_u64() {
                    p["pattern_id"] = Value::from(root_id(&node, id));
                }
            }
            body
        })
        .collect();
    Ok(Json(merge_patterns(bodies, limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_pattern_ids_name_their_worker_and_keep_its_id() {
        let (a, b) = (root_id("worker-a", 42), root_id("worker-b", 42));
        assert_ne!(a, b, "the same id on two workers is two patterns");
        assert_eq!(a >> TAG_SHIFT, tag("worker-a"));
        assert_eq!(a & ((1 << TAG_SHIFT) - 1), 42);
        assert!(a >> TAG_SHIFT != 0 && u64::MAX >> TAG_SHIFT >= tag("x"));
        // JSON numbers above 2^53 lose digits in JavaScript; the UI reads them in Rust and
        // passes them back as text, but the ids must still read back exactly from JSON.
        let json = serde_json::to_string(&serde_json::json!({ "id": a })).expect("json");
        let back: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(back["id"].as_u64(), Some(a));
    }
}
