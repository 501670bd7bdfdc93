//! Audit events from the clean room (reference §1e, AC `js/src/endpoints/events.ts`).
//!
//! A PUT overwrites one key of `public:events-<contractId>[-<scope>]` (key = `id`, default the
//! contract id) with `{timestamp: 13-digit zero-padded ms, data}`; the history is the ledger. The
//! latest value is read from the state; a seqno range needs the ledger's history, which the caller
//! provides through [`EventHistory`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::{
    AttestationVerifier, Caller, SignatureVerifier, check_report_data, decode_base64,
    iso_from_millis, match_policy, verify_clean_room_for,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Tx, Version, maps};

/// The largest timestamp (13 decimal digits of milliseconds).
pub const MAX_TIMESTAMP: u64 = 9_999_999_999_999;

/// Seqnos per page of a historical listing.
pub const SEQNOS_PER_PAGE: u64 = 2000;

/// Where an event goes: the query parameters `id` and `scope`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventKey {
    /// `id` (default: the contract id).
    pub id: Option<String>,
    /// `scope` (default: none).
    pub scope: Option<String>,
}

impl EventKey {
    fn resolve<'a>(&'a self, contract_id: &'a str) -> (&'a str, &'a str) {
        (
            self.id.as_deref().unwrap_or(contract_id),
            self.scope.as_deref().unwrap_or(""),
        )
    }
}

/// The verifiers a clean-room write needs.
pub struct CleanRoomVerifiers<'v> {
    /// Attestation reports.
    pub attestation: &'v dyn AttestationVerifier,
    /// RSA-PSS signatures.
    pub signature: &'v dyn SignatureVerifier,
}

/// `PUT /app/contracts/{cid}/events[?id=&scope=]` → `Ok(())` = 204. Checks in the reference's
/// order: attestation present, sign present, timestamp present and ≤ 13 digits, attestation vs
/// policy, report_data binds `sign.publicKey`, (jwt: claims vs policy), signature over the data.
pub fn put_event(
    tx: &mut Tx,
    caller: &Caller,
    verifiers: &CleanRoomVerifiers<'_>,
    contract_id: &str,
    key: &EventKey,
    body: &Value,
) -> ApiResult<()> {
    if *caller == Caller::Unauthenticated && body.get("attestation").is_none_or(Value::is_null) {
        return Err(ApiError::new(
            ErrorCode::AttestationMissing,
            "Attestation payload must be supplied.",
        ));
    }
    let Some(sign) = body.get("sign").filter(|s| s.is_object()) else {
        return Err(ApiError::new(
            ErrorCode::SignatureMissing,
            "Signature payload must be supplied.",
        ));
    };
    let timestamp_text = match body.get("timestamp") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::new(
                ErrorCode::TimestampMissing,
                "Timestamp must be supplied.",
            ));
        }
    };
    let timestamp: u64 = timestamp_text.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("timestamp '{timestamp_text}' is not milliseconds since the epoch."),
        )
    })?;
    if timestamp > MAX_TIMESTAMP {
        return Err(ApiError::new(
            ErrorCode::TimestampTooLarge,
            format!("Timestamp {timestamp} is larger than {MAX_TIMESTAMP}."),
        ));
    }
    let public_key_b64 = sign.get("publicKey").and_then(Value::as_str).unwrap_or("");
    let public_key_pem = match caller {
        Caller::Unauthenticated => {
            let delegate = Some(("events", "writer"));
            let verified =
                verify_clean_room_for(tx, verifiers.attestation, contract_id, body, delegate)?;
            check_report_data(&verified.report_data, public_key_b64)?
        }
        Caller::Jwt(claims) => {
            match_policy(tx, contract_id, claims)
                .map_err(|m| ApiError::new(ErrorCode::VerifyJwtAttestationFailed, m))?;
            String::from_utf8(decode_base64("sign.publicKey", public_key_b64)?).map_err(|_| {
                ApiError::new(ErrorCode::InvalidInput, "sign.publicKey is not PEM text.")
            })?
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedAuthPolicy,
                "Events can only be written by a clean room (attestation or jwt).",
            ));
        }
    };
    let data_b64 = body.get("data").and_then(Value::as_str).unwrap_or("");
    let data_bytes = decode_base64("data", data_b64)?;
    let signature = decode_base64(
        "sign.signature",
        sign.get("signature").and_then(Value::as_str).unwrap_or(""),
    )?;
    verifiers
        .signature
        .verify_rsa_pss_sha256(&public_key_pem, &data_bytes, &signature)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::SignatureMismatch,
                format!("Signature verification was not successful: {e}"),
            )
        })?;
    let data: Value = serde_json::from_slice(&data_bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("data is not base64 of JSON: {e}"),
        )
    })?;
    let (id, scope) = key.resolve(contract_id);
    tx.put(
        &maps::events(contract_id, scope),
        id,
        json!({"timestamp": format!("{timestamp:0>13}"), "data": data}),
    );
    Ok(())
}

/// The ledger's history of one key, for seqno ranges (implemented by the ledger owner).
pub trait EventHistory {
    /// The values written to `map[key]` by transactions with `from ≤ seqno ≤ to`, in order.
    fn writes(&self, map: &str, key: &str, from: u64, to: u64) -> ApiResult<Vec<(Version, Value)>>;
}

/// The store's own record of event writes (complete when the store was rebuilt by replaying the
/// whole ledger; after a snapshot only the tail since it).
impl EventHistory for crate::kv::Store {
    fn writes(&self, map: &str, key: &str, from: u64, to: u64) -> ApiResult<Vec<(Version, Value)>> {
        Ok(self.key_history(map, key, from, to))
    }
}

/// A seqno range of a listing: `from_seqno`, `to_seqno`, `max_seqno_per_page`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqnoRange {
    /// First seqno (default 1).
    pub from_seqno: Option<u64>,
    /// Last seqno (default the key's last write).
    pub to_seqno: Option<u64>,
    /// Page size in seqnos (default [`SEQNOS_PER_PAGE`]).
    pub max_seqno_per_page: Option<u64>,
}

fn entry(scope: &str, id: &str, seqno: u64, value: &Value, iso_key: &str) -> Value {
    let timestamp = value
        .get("timestamp")
        .and_then(Value::as_str)
        .unwrap_or("0");
    let millis = timestamp.parse::<u64>().unwrap_or(0);
    let mut out = json!({
        "scope": scope,
        "id": id,
        "seqno": seqno,
        "timestamp": timestamp,
        "data": value.get("data").cloned().unwrap_or(Value::Null),
    });
    out[iso_key] = json!(iso_from_millis(millis));
    out
}

/// `GET /app/contracts/{cid}/events[?id][&scope][&from_seqno][&to_seqno][&max_seqno_per_page]`.
/// Without a seqno: the latest value only (`timestamp_iso`, as the reference). With one: a page
/// of the history (`timestampIso`) and a `nextLink` when more remains.
pub fn list_events(
    tx: &Tx,
    history: Option<&dyn EventHistory>,
    contract_id: &str,
    key: &EventKey,
    range: SeqnoRange,
) -> ApiResult<Value> {
    let (id, scope) = key.resolve(contract_id);
    let map = maps::events(contract_id, scope);
    let last = tx.committed_version(&map, id);
    if range.from_seqno.is_none() && range.to_seqno.is_none() {
        let value: Vec<Value> = match (tx.get(&map, id), last) {
            (Some(v), Some(version)) => vec![entry(scope, id, version.seqno, v, "timestamp_iso")],
            _ => Vec::new(),
        };
        return Ok(json!({ "value": value }));
    }
    let Some(history) = history else {
        return Err(ApiError::new(
            ErrorCode::InternalError,
            "The event history is not available.",
        ));
    };
    let from = range.from_seqno.unwrap_or(1);
    let Some(to) = range.to_seqno.or(last.map(|v| v.seqno)) else {
        return Ok(json!({ "value": [] }));
    };
    let page = range.max_seqno_per_page.unwrap_or(SEQNOS_PER_PAGE).max(1);
    let end = to.min(from.saturating_add(page - 1));
    let value: Vec<Value> = history
        .writes(&map, id, from, end)?
        .iter()
        .map(|(version, v)| entry(scope, id, version.seqno, v, "timestampIso"))
        .collect();
    let mut out = json!({ "value": value });
    if end < to {
        out["nextLink"] = json!(format!(
            "/app/contracts/{contract_id}/events?from_seqno={}&to_seqno={to}&id={id}&scope={scope}",
            end + 1
        ));
    }
    Ok(out)
}

/// A test-and-reference event body: what a clean room sends (`data` = base64 of the JSON).
pub fn event_body(
    timestamp_ms: u64,
    data: &Value,
    signature_b64: &str,
    public_key_b64: &str,
    attestation: Option<Value>,
) -> Value {
    let mut body = json!({
        "timestamp": timestamp_ms.to_string(),
        "data": BASE64.encode(data.to_string()),
        "sign": {"signature": signature_b64, "publicKey": public_key_b64},
    });
    if let Some(a) = attestation {
        body["attestation"] = a;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::super::RsaPssVerifier;
    use super::super::test_support::*;
    use super::*;
    use crate::kv::Store;

    fn store_with_policy() -> Store {
        let mut store = Store::default();
        let mut tx = store.transaction();
        tx.put(maps::ACCEPTED_CONTRACTS, "c", json!({"data": 1}));
        let policy = maps::clean_room_policy("c");
        tx.put(&policy, "x-ms-sevsnpvm-hostdata", json!(["good"]));
        tx.put(&policy, "x-ms-sevsnpvm-is-debuggable", json!([false]));
        store.commit(&tx.into_write_set());
        store
    }

    fn signed_body(key: &CleanRoomKey, data: &Value, claims: Value, ts: u64) -> Value {
        let sig = key.sign(data.to_string().as_bytes());
        event_body(
            ts,
            data,
            &sig,
            &key.public_pem_b64,
            Some(key.attestation(claims)),
        )
    }

    const V: CleanRoomVerifiers<'static> = CleanRoomVerifiers {
        attestation: &FakeAttestation,
        signature: &RsaPssVerifier,
    };

    fn put(
        store: &Store,
        caller: &Caller,
        key: &EventKey,
        body: &Value,
    ) -> ApiResult<crate::kv::WriteSet> {
        let mut tx = store.transaction();
        put_event(&mut tx, caller, &V, "c", key, body)?;
        Ok(tx.into_write_set())
    }

    #[test]
    fn put_checks_in_order() {
        let store = store_with_policy();
        let key = CleanRoomKey::new();
        let data = json!({"message": "Starting execution of nginx-hello container"});
        let good = signed_body(&key, &data, hostdata("good"), 1_700_000_000_000);
        let k = EventKey::default();
        let code = |body: &Value, caller: &Caller| put(&store, caller, &k, body).unwrap_err().code;
        let un = Caller::Unauthenticated;
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove("attestation");
        assert_eq!(code(&b, &un), ErrorCode::AttestationMissing);
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove("sign");
        assert_eq!(code(&b, &un), ErrorCode::SignatureMissing);
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(code(&b, &un), ErrorCode::TimestampMissing);
        let mut b = good.clone();
        b["timestamp"] = json!("10000000000000");
        assert_eq!(code(&b, &un), ErrorCode::TimestampTooLarge);
        let b = signed_body(&key, &data, hostdata("other"), 1);
        assert_eq!(code(&b, &un), ErrorCode::VerifySnpAttestationFailed);
        let mut b = good.clone();
        b["attestation"] = json!({"bad": true});
        assert_eq!(code(&b, &un), ErrorCode::VerifySnpAttestationFailed);
        let other = CleanRoomKey::new();
        let mut b = good.clone();
        b["sign"]["publicKey"] = json!(other.public_pem_b64);
        assert_eq!(code(&b, &un), ErrorCode::ReportDataMismatch);
        let mut b = good.clone();
        b["platform"] = json!("tdx");
        assert_eq!(code(&b, &un), ErrorCode::UnsupportedPlatform);
        let jwt_bad = Caller::Jwt(json!({"oid": "o2"}).as_object().unwrap().clone());
        assert_eq!(code(&good, &jwt_bad), ErrorCode::VerifyJwtAttestationFailed);
        let jwt_good = Caller::Jwt(hostdata("good").as_object().unwrap().clone());
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove("attestation");
        assert!(put(&store, &jwt_good, &k, &b).is_ok());
        assert_eq!(
            code(&good, &Caller::Member("m".into())),
            ErrorCode::UnsupportedAuthPolicy
        );
        let mut b = good.clone();
        b["data"] = json!(BASE64.encode(b"{\"message\":\"forged\"}"));
        assert_eq!(code(&b, &un), ErrorCode::SignatureMismatch);
        assert!(put(&store, &un, &k, &good).is_ok());
    }

    #[test]
    fn put_then_list_latest_and_history() {
        let mut store = store_with_policy();
        let key = CleanRoomKey::new();
        let k = EventKey {
            id: Some("e1".into()),
            scope: Some("s".into()),
        };
        let mut seqnos = Vec::new();
        for (i, msg) in ["one", "two"].iter().enumerate() {
            let body = signed_body(
                &key,
                &json!({"message": msg}),
                hostdata("good"),
                1_700_000_000_000 + i as u64,
            );
            let ws = put(&store, &Caller::Unauthenticated, &k, &body).unwrap();
            seqnos.push(store.commit(&ws));
        }
        let tx = store.transaction();
        let latest = list_events(&tx, None, "c", &k, SeqnoRange::default()).unwrap();
        assert_eq!(
            latest,
            json!({"value": [{
                "scope": "s", "id": "e1", "seqno": seqnos[1].seqno, "timestamp": "1700000000001",
                "timestamp_iso": "2023-11-14T22:13:20.001Z", "data": {"message": "two"}
            }]})
        );
        assert_eq!(
            list_events(&tx, None, "c", &EventKey::default(), SeqnoRange::default()).unwrap(),
            json!({"value": []})
        );
        assert_eq!(
            tx.get("public:events-c-s", "e1").unwrap()["timestamp"],
            "1700000000001"
        );

        struct Recorded(Vec<(Version, Value)>);
        impl EventHistory for Recorded {
            fn writes(
                &self,
                _map: &str,
                _key: &str,
                from: u64,
                to: u64,
            ) -> ApiResult<Vec<(Version, Value)>> {
                Ok(self
                    .0
                    .iter()
                    .filter(|(v, _)| v.seqno >= from && v.seqno <= to)
                    .cloned()
                    .collect())
            }
        }
        let history = Recorded(vec![
            (
                seqnos[0],
                json!({"timestamp": "1700000000000", "data": {"message": "one"}}),
            ),
            (
                seqnos[1],
                json!({"timestamp": "1700000000001", "data": {"message": "two"}}),
            ),
        ]);
        let range = SeqnoRange {
            from_seqno: Some(1),
            to_seqno: None,
            max_seqno_per_page: Some(seqnos[0].seqno),
        };
        let page = list_events(&tx, Some(&history), "c", &k, range).unwrap();
        assert_eq!(page["value"].as_array().unwrap().len(), 1);
        assert_eq!(page["value"][0]["timestampIso"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            page["nextLink"],
            format!(
                "/app/contracts/c/events?from_seqno={}&to_seqno={}&id=e1&scope=s",
                seqnos[0].seqno + 1,
                seqnos[1].seqno
            )
        );
        let all = list_events(
            &tx,
            Some(&history),
            "c",
            &k,
            SeqnoRange {
                from_seqno: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all["value"].as_array().unwrap().len(), 2);
        assert!(all.get("nextLink").is_none());
        // The store's own history gives the same page.
        let from_store = list_events(
            &tx,
            Some(&store),
            "c",
            &k,
            SeqnoRange {
                from_seqno: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(from_store, all);
    }
}
