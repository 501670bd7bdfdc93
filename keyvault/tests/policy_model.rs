//! proptest: release policy evaluation (`ReleasePolicy::parse` + `evaluate`) against a small
//! reference evaluator written differently — directly over the policy JSON, with its own claim
//! lookup and comparison rules — on generated policies, claims and issuers.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use encfs_keyvault::policy::ReleasePolicy;

const CLAIMS: [&str; 4] = ["a", "b", "x-ms-c", "tee.d"];
const AUTHORITIES: [&str; 3] = [
    "https://one.example",
    "https://ONE.example/",
    "https://two.example",
];
const OPERATORS: [&str; 7] = [
    "equals",
    "notEquals",
    "less",
    "lessOrEquals",
    "greater",
    "greaterOrEquals",
    "exists",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec!["0", "1", "x", "y", "true", "False"]).prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
    ]
}

fn condition() -> impl Strategy<Value = Value> {
    let leaf = (
        prop::sample::select(CLAIMS.to_vec()),
        prop::sample::select(OPERATORS.to_vec()),
        scalar(),
        any::<bool>(),
    )
        .prop_map(|(claim, op, value, flag)| {
            let value = if op == "exists" { json!(flag) } else { value };
            let mut object = Map::new();
            object.insert("claim".into(), json!(claim));
            object.insert(op.into(), value);
            Value::Object(object)
        });
    leaf.prop_recursive(3, 16, 3, |inner| {
        (any::<bool>(), prop::collection::vec(inner, 1..4)).prop_map(|(any_of, list)| {
            if any_of {
                json!({"anyOf": list})
            } else {
                json!({"allOf": list})
            }
        })
    })
}

fn policy() -> impl Strategy<Value = Value> {
    let authority = (
        prop::sample::select(AUTHORITIES.to_vec()),
        any::<bool>(),
        prop::collection::vec(condition(), 1..4),
    )
        .prop_map(|(authority, any_of, list)| {
            let key = if any_of { "anyOf" } else { "allOf" };
            json!({"authority": authority, key: list})
        });
    (any::<bool>(), prop::collection::vec(authority, 1..3)).prop_map(|(any_of, list)| {
        let key = if any_of { "anyOf" } else { "allOf" };
        json!({"version": "1.0.0", key: list})
    })
}

fn claims() -> impl Strategy<Value = Value> {
    (
        prop::option::of(scalar()),
        prop::option::of(scalar()),
        prop::option::of(scalar()),
        prop::option::of(scalar()),
    )
        .prop_map(|(a, b, c, d)| {
            let mut object = Map::new();
            if let Some(a) = a {
                object.insert("a".into(), a);
            }
            if let Some(b) = b {
                object.insert("b".into(), b);
            }
            if let Some(c) = c {
                object.insert("x-ms-c".into(), c);
            }
            if let Some(d) = d {
                object.insert("tee".into(), json!({"d": d}));
            }
            Value::Object(object)
        })
}

// ---- the reference evaluator ----

fn reference_lookup<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    // The generated names are either plain or one dot deep.
    match name.find('.') {
        None => claims.get(name),
        Some(dot) => claims
            .get(&name[..dot])
            .and_then(|inner| inner.get(&name[dot + 1..])),
    }
}

fn as_bool_text(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn reference_equal(claim: &Value, wanted: &Value) -> bool {
    if claim.is_string() == wanted.is_string()
        && claim.is_boolean() == wanted.is_boolean()
        && claim.is_number() == wanted.is_number()
    {
        return match (claim.as_f64(), wanted.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => claim == wanted,
        };
    }
    let (text, other) = match (claim.as_str(), wanted.as_str()) {
        (Some(text), None) => (text, wanted),
        (None, Some(text)) => (text, claim),
        _ => return false,
    };
    if let Some(b) = other.as_bool() {
        return as_bool_text(text) == Some(b);
    }
    if let Some(n) = other.as_f64() {
        return text.trim().parse::<f64>() == Ok(n);
    }
    false
}

fn reference_condition(condition: &Value, claims: &Value) -> bool {
    if let Some(list) = condition.get("anyOf").and_then(Value::as_array) {
        return list.iter().any(|c| reference_condition(c, claims));
    }
    if let Some(list) = condition.get("allOf").and_then(Value::as_array) {
        return list.iter().all(|c| reference_condition(c, claims));
    }
    let name = condition["claim"].as_str().unwrap();
    let (op, wanted) = condition
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() != "claim")
        .unwrap();
    let found = reference_lookup(claims, name);
    if op == "exists" {
        return wanted.as_bool().unwrap() == found.is_some();
    }
    let Some(found) = found else { return false };
    let ordering = match (found, wanted) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap().partial_cmp(&y.as_f64().unwrap())
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op.as_str() {
        "equals" => reference_equal(found, wanted),
        "notEquals" => !reference_equal(found, wanted),
        "less" => ordering == Some(std::cmp::Ordering::Less),
        "lessOrEquals" => matches!(
            ordering,
            Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
        ),
        "greater" => ordering == Some(std::cmp::Ordering::Greater),
        "greaterOrEquals" => matches!(
            ordering,
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ),
        other => panic!("generated operator {other}"),
    }
}

fn reference_authority_matches(authority: &str, issuer: &str) -> bool {
    authority.trim_end_matches('/').to_lowercase() == issuer.trim_end_matches('/').to_lowercase()
}

fn reference_policy(policy: &Value, issuer: &str, claims: &Value) -> bool {
    let entry_holds = |entry: &Value| {
        reference_authority_matches(entry["authority"].as_str().unwrap(), issuer)
            && match entry.get("anyOf") {
                Some(list) => list
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| reference_condition(c, claims)),
                None => entry["allOf"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| reference_condition(c, claims)),
            }
    };
    match policy.get("anyOf") {
        Some(list) => list.as_array().unwrap().iter().any(entry_holds),
        None => policy["allOf"].as_array().unwrap().iter().all(entry_holds),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn evaluation_matches_the_reference(
        policy in policy(),
        claims in claims(),
        issuer in prop::sample::select(vec!["https://one.example", "https://two.example/", "https://three.example"]),
    ) {
        let parsed = ReleasePolicy::from_value(&policy).unwrap();
        prop_assert_eq!(
            parsed.evaluate(issuer, &claims),
            reference_policy(&policy, issuer, &claims),
            "policy {} claims {} issuer {}", policy, claims, issuer
        );
    }

    #[test]
    fn the_parser_never_panics_on_arbitrary_json(text in "\\PC{0,200}") {
        let _ = ReleasePolicy::parse(text.as_bytes());
    }
}
