//! Secure key release policies: the grammar of Azure Key Vault / Managed HSM ("secure key release
//! policy grammar", version 1.0.0) parsed into a typed tree, and its evaluation against the claims
//! of a verified attestation token.
//!
//! ```text
//! policy    = {"version": "1.0.0", "anyOf" | "allOf": [authority, …]}
//! authority = {"authority": URL, "anyOf" | "allOf": [condition, …]}
//! condition = {"claim": NAME, OP: VALUE} | {"anyOf": [condition, …]} | {"allOf": [condition, …]}
//! OP        = equals | notEquals | less | lessOrEquals | greater | greaterOrEquals | exists
//! VALUE     = JSON string | number | true | false
//! ```
//!
//! Choices where the published grammar is silent (each is documented in `docs/keyrelease.md`):
//! - member names are matched case-insensitively (the EBNF writes `anyof`, the examples `anyOf`);
//!   the older `{"claim", "condition": OP, "value"}` form of the 7.3 previews is accepted too;
//! - a claim name is first looked up as a top-level claim (`x-ms-sevsnpvm-hostdata`), then as a
//!   dotted path into nested objects (`x-ms-isolation-tee.x-ms-attestation-type`, as the
//!   confidential-VM policy writes it);
//! - a missing claim fails every operator except `exists: false`;
//! - `equals`/`notEquals` compare like types exactly (strings case-sensitively); a boolean or a
//!   number claim also equals its text form (`true` equals `"true"`, `3` equals `"3"`);
//! - `less`… compare numbers numerically and strings lexicographically; other pairs fail;
//! - an authority entry applies only to a token whose `iss` is that authority (scheme and host
//!   case-insensitive, a trailing `/` ignored). Top-level `anyOf`: some applicable entry holds;
//!   top-level `allOf`: every entry is applicable and holds.

use serde_json::{Map, Value};

/// The policy versions accepted.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "0.2"];
/// Deepest nesting of conditions accepted (a guard against stack exhaustion).
pub const MAX_DEPTH: usize = 32;

/// Why a policy was refused at import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy is not JSON.
    #[error("the release policy is not JSON: {0}")]
    NotJson(String),
    /// A member is missing, of the wrong type or unknown; `at` is a JSON path to it.
    #[error("the release policy is malformed at {at}: {reason}")]
    Malformed {
        /// Where (`$.anyOf[0].allOf[2]`).
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// The version is not one this vault knows.
    #[error("the release policy version {0:?} is not supported (1.0.0)")]
    Version(String),
}

/// A claim comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `equals`.
    Equals,
    /// `notEquals`.
    NotEquals,
    /// `less`.
    Less,
    /// `lessOrEquals`.
    LessOrEquals,
    /// `greater`.
    Greater,
    /// `greaterOrEquals`.
    GreaterOrEquals,
    /// `exists` (the value is a boolean).
    Exists,
}

impl Operator {
    const ALL: [(Self, &'static str); 7] = [
        (Self::Equals, "equals"),
        (Self::NotEquals, "notEquals"),
        (Self::Less, "less"),
        (Self::LessOrEquals, "lessOrEquals"),
        (Self::Greater, "greater"),
        (Self::GreaterOrEquals, "greaterOrEquals"),
        (Self::Exists, "exists"),
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(op, _)| *op)
    }

    /// The grammar's name of the operator.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(op, _)| *op == self)
            .map(|(_, n)| *n)
            .unwrap_or("equals")
    }
}

/// A policy value: a JSON string, number or boolean.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyValue {
    /// A string.
    String(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// A condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `{"claim": NAME, OP: VALUE}`.
    Claim {
        /// The claim name (top-level name or dotted path).
        claim: String,
        /// The operator.
        operator: Operator,
        /// The value compared against.
        value: PolicyValue,
    },
    /// Any of the conditions holds.
    AnyOf(Vec<Condition>),
    /// All of the conditions hold.
    AllOf(Vec<Condition>),
}

/// How a list combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combinator {
    /// `anyOf`.
    AnyOf,
    /// `allOf`.
    AllOf,
}

/// One authority entry: the issuer a token must come from and the conditions on its claims.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorityRule {
    /// The authority (issuer) URL.
    pub authority: String,
    /// How the conditions combine.
    pub combinator: Combinator,
    /// The conditions.
    pub conditions: Vec<Condition>,
}

/// A parsed release policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasePolicy {
    /// The version (`1.0.0`).
    pub version: String,
    /// How the authority entries combine.
    pub combinator: Combinator,
    /// The authority entries.
    pub authorities: Vec<AuthorityRule>,
}

fn malformed(at: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Malformed {
        at: at.to_owned(),
        reason: reason.into(),
    }
}

fn member<'a>(object: &'a Map<String, Value>, name: &str) -> Option<(&'a String, &'a Value)> {
    object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
}

fn combinator_member<'a>(
    object: &'a Map<String, Value>,
    at: &str,
) -> Result<Option<(Combinator, &'a Value)>, PolicyError> {
    let any = member(object, "anyOf");
    let all = member(object, "allOf");
    match (any, all) {
        (Some(_), Some(_)) => Err(malformed(at, "both anyOf and allOf")),
        (Some((_, v)), None) => Ok(Some((Combinator::AnyOf, v))),
        (None, Some((_, v))) => Ok(Some((Combinator::AllOf, v))),
        (None, None) => Ok(None),
    }
}

fn non_empty_array<'a>(value: &'a Value, at: &str) -> Result<&'a Vec<Value>, PolicyError> {
    let array = value
        .as_array()
        .ok_or_else(|| malformed(at, "expected an array"))?;
    if array.is_empty() {
        return Err(malformed(at, "an empty list (one entry is required)"));
    }
    Ok(array)
}

fn parse_value(value: &Value, at: &str) -> Result<PolicyValue, PolicyError> {
    match value {
        Value::String(s) => Ok(PolicyValue::String(s.clone())),
        Value::Bool(b) => Ok(PolicyValue::Bool(*b)),
        Value::Number(n) => n
            .as_f64()
            .map(PolicyValue::Number)
            .ok_or_else(|| malformed(at, "a number out of range")),
        _ => Err(malformed(at, "the value must be a string, a number, true or false")),
    }
}

fn parse_condition(value: &Value, at: &str, depth: usize) -> Result<Condition, PolicyError> {
    if depth > MAX_DEPTH {
        return Err(malformed(at, format!("nested deeper than {MAX_DEPTH}")));
    }
    let object = value
        .as_object()
        .ok_or_else(|| malformed(at, "a condition must be an object"))?;
    if let Some((combinator, list)) = combinator_member(object, at)? {
        if object.len() != 1 {
            return Err(malformed(at, "anyOf/allOf must be the only member of its object"));
        }
        let name = match combinator {
            Combinator::AnyOf => "anyOf",
            Combinator::AllOf => "allOf",
        };
        let list_at = format!("{at}.{name}");
        let conditions = non_empty_array(list, &list_at)?
            .iter()
            .enumerate()
            .map(|(i, c)| parse_condition(c, &format!("{list_at}[{i}]"), depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(match combinator {
            Combinator::AnyOf => Condition::AnyOf(conditions),
            Combinator::AllOf => Condition::AllOf(conditions),
        });
    }
    let (_, claim) = member(object, "claim").ok_or_else(|| {
        malformed(at, "a condition needs a claim, anyOf or allOf member")
    })?;
    let claim = claim
        .as_str()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| malformed(&format!("{at}.claim"), "the claim name must be a non-empty string"))?
        .to_owned();
    let mut found: Option<(Operator, &Value)> = None;
    let legacy = member(object, "condition");
    for (key, value) in object {
        if key.eq_ignore_ascii_case("claim") {
            continue;
        }
        if legacy.is_some() && (key.eq_ignore_ascii_case("condition") || key.eq_ignore_ascii_case("value")) {
            continue;
        }
        let operator = Operator::from_name(key)
            .ok_or_else(|| malformed(&format!("{at}.{key}"), "an unknown member (not an operator)"))?;
        if found.is_some() {
            return Err(malformed(at, "a claim condition takes exactly one operator"));
        }
        found = Some((operator, value));
    }
    if let Some((_, name)) = legacy {
        if found.is_some() {
            return Err(malformed(at, "a claim condition takes exactly one operator"));
        }
        let name = name
            .as_str()
            .ok_or_else(|| malformed(&format!("{at}.condition"), "must be an operator name"))?;
        let operator = Operator::from_name(name)
            .ok_or_else(|| malformed(&format!("{at}.condition"), format!("unknown operator {name:?}")))?;
        let (_, value) = member(object, "value")
            .ok_or_else(|| malformed(at, "the condition form needs a value member"))?;
        found = Some((operator, value));
    }
    let (operator, value) =
        found.ok_or_else(|| malformed(at, "a claim condition needs an operator"))?;
    let value_at = format!("{at}.{}", operator.name());
    let value = parse_value(value, &value_at)?;
    if operator == Operator::Exists && !matches!(value, PolicyValue::Bool(_)) {
        return Err(malformed(&value_at, "exists takes true or false"));
    }
    Ok(Condition::Claim {
        claim,
        operator,
        value,
    })
}

fn parse_authority(value: &Value, at: &str) -> Result<AuthorityRule, PolicyError> {
    let object = value
        .as_object()
        .ok_or_else(|| malformed(at, "an authority entry must be an object"))?;
    let (_, authority) =
        member(object, "authority").ok_or_else(|| malformed(at, "the authority member is missing"))?;
    let authority = authority
        .as_str()
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| malformed(&format!("{at}.authority"), "must be a non-empty string"))?
        .to_owned();
    let (combinator, list) = combinator_member(object, at)?
        .ok_or_else(|| malformed(at, "an authority entry needs anyOf or allOf"))?;
    if object.len() != 2 {
        return Err(malformed(at, "an authority entry has only authority and anyOf/allOf"));
    }
    let name = match combinator {
        Combinator::AnyOf => "anyOf",
        Combinator::AllOf => "allOf",
    };
    let list_at = format!("{at}.{name}");
    let conditions = non_empty_array(list, &list_at)?
        .iter()
        .enumerate()
        .map(|(i, c)| parse_condition(c, &format!("{list_at}[{i}]"), 1))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AuthorityRule {
        authority,
        combinator,
        conditions,
    })
}

impl ReleasePolicy {
    /// Parses the policy JSON text.
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::NotJson(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Parses a policy JSON value.
    pub fn from_value(value: &Value) -> Result<Self, PolicyError> {
        let object = value
            .as_object()
            .ok_or_else(|| malformed("$", "the policy must be an object"))?;
        let (_, version) =
            member(object, "version").ok_or_else(|| malformed("$", "the version member is missing"))?;
        let version = version
            .as_str()
            .ok_or_else(|| malformed("$.version", "must be a string"))?
            .to_owned();
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(PolicyError::Version(version));
        }
        let (combinator, list) = combinator_member(object, "$")?
            .ok_or_else(|| malformed("$", "the policy needs anyOf (or allOf) of authorities"))?;
        if object.len() != 2 {
            return Err(malformed("$", "a policy has only version and anyOf/allOf"));
        }
        let name = match combinator {
            Combinator::AnyOf => "anyOf",
            Combinator::AllOf => "allOf",
        };
        let list_at = format!("$.{name}");
        let authorities = non_empty_array(list, &list_at)?
            .iter()
            .enumerate()
            .map(|(i, a)| parse_authority(a, &format!("{list_at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            version,
            combinator,
            authorities,
        })
    }

    /// The authority URLs the policy names (the issuers whose tokens may release).
    pub fn authorities(&self) -> Vec<&str> {
        self.authorities.iter().map(|a| a.authority.as_str()).collect()
    }

    /// Whether the verified claims of a token issued by `issuer` satisfy the policy.
    pub fn evaluate(&self, issuer: &str, claims: &Value) -> bool {
        let holds = |rule: &AuthorityRule| {
            same_authority(&rule.authority, issuer)
                && combine(rule.combinator, &rule.conditions, claims)
        };
        match self.combinator {
            Combinator::AnyOf => self.authorities.iter().any(holds),
            Combinator::AllOf => self.authorities.iter().all(holds),
        }
    }
}

/// Whether two authority URLs name the same issuer (scheme and host case-insensitive, a
/// trailing `/` ignored).
pub fn same_authority(a: &str, b: &str) -> bool {
    normalise_authority(a) == normalise_authority(b)
}

fn normalise_authority(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            let path = if path.is_empty() { String::new() } else { format!("/{path}") };
            format!("{}://{}{path}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase())
        }
        None => format!("https://{}", url.to_ascii_lowercase()),
    }
}

fn combine(combinator: Combinator, conditions: &[Condition], claims: &Value) -> bool {
    match combinator {
        Combinator::AnyOf => conditions.iter().any(|c| condition_holds(c, claims)),
        Combinator::AllOf => conditions.iter().all(|c| condition_holds(c, claims)),
    }
}

/// The claim `name` of `claims`: a top-level member, else a dotted path into nested objects.
pub fn lookup_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.')
        .try_fold(claims, |value, segment| value.get(segment))
}

fn condition_holds(condition: &Condition, claims: &Value) -> bool {
    match condition {
        Condition::AnyOf(list) => combine(Combinator::AnyOf, list, claims),
        Condition::AllOf(list) => combine(Combinator::AllOf, list, claims),
        Condition::Claim {
            claim,
            operator,
            value,
        } => {
            let found = lookup_claim(claims, claim);
            match (operator, found) {
                (Operator::Exists, found) => {
                    matches!(value, PolicyValue::Bool(wanted) if *wanted == found.is_some())
                }
                (_, None) => false,
                (Operator::Equals, Some(found)) => values_equal(found, value),
                (Operator::NotEquals, Some(found)) => !values_equal(found, value),
                (op, Some(found)) => match compare(found, value) {
                    Some(ordering) => match op {
                        Operator::Less => ordering.is_lt(),
                        Operator::LessOrEquals => ordering.is_le(),
                        Operator::Greater => ordering.is_gt(),
                        Operator::GreaterOrEquals => ordering.is_ge(),
                        _ => false,
                    },
                    None => false,
                },
            }
        }
    }
}

fn values_equal(claim: &Value, value: &PolicyValue) -> bool {
    match (claim, value) {
        (Value::String(c), PolicyValue::String(v)) => c == v,
        (Value::Bool(c), PolicyValue::Bool(v)) => c == v,
        (Value::Number(c), PolicyValue::Number(v)) => c.as_f64() == Some(*v),
        (Value::Bool(c), PolicyValue::String(v)) => v.eq_ignore_ascii_case(if *c { "true" } else { "false" }),
        (Value::String(c), PolicyValue::Bool(v)) => c.eq_ignore_ascii_case(if *v { "true" } else { "false" }),
        (Value::Number(c), PolicyValue::String(v)) => {
            v.trim().parse::<f64>().ok().is_some_and(|v| c.as_f64() == Some(v))
        }
        (Value::String(c), PolicyValue::Number(v)) => {
            c.trim().parse::<f64>().ok().is_some_and(|c| c == *v)
        }
        _ => false,
    }
}

fn compare(claim: &Value, value: &PolicyValue) -> Option<std::cmp::Ordering> {
    match (claim, value) {
        (Value::Number(c), PolicyValue::Number(v)) => c.as_f64()?.partial_cmp(v),
        (Value::String(c), PolicyValue::String(v)) => Some(c.as_str().cmp(v.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAA: &str = "https://sharedeus.eus.attest.azure.net";

    fn reference_policy(hostdata: &str) -> Value {
        json!({"anyOf":[{"allOf":[
            {"claim":"x-ms-sevsnpvm-hostdata","equals":hostdata},
            {"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},
            {"claim":"x-ms-attestation-type","equals":"sevsnpvm"}],
            "authority": MAA}],
            "version":"1.0.0"})
    }

    fn claims(hostdata: &str) -> Value {
        json!({"x-ms-sevsnpvm-hostdata": hostdata, "x-ms-compliance-status": "azure-compliant-uvm",
               "x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-is-debuggable": false,
               "x-ms-sevsnpvm-guestsvn": 2,
               "x-ms-isolation-tee": {"x-ms-attestation-type": "sevsnpvm"}})
    }

    #[test]
    fn the_reference_policy_parses_and_matches_only_its_hostdata() {
        let policy = ReleasePolicy::from_value(&reference_policy("aa")).unwrap();
        assert_eq!(policy.authorities(), vec![MAA]);
        assert!(policy.evaluate(MAA, &claims("aa")));
        assert!(policy.evaluate(&format!("{MAA}/"), &claims("aa")));
        assert!(!policy.evaluate(MAA, &claims("bb")));
        assert!(!policy.evaluate("https://other.attest.azure.net", &claims("aa")));
    }

    #[test]
    fn operators_evaluate_both_ways() {
        let check = |condition: Value, expected: bool| {
            let policy = ReleasePolicy::from_value(
                &json!({"version":"1.0.0","anyOf":[{"authority":MAA,"allOf":[condition.clone()]}]}),
            )
            .unwrap();
            assert_eq!(policy.evaluate(MAA, &claims("aa")), expected, "{condition}");
        };
        check(json!({"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}), true);
        check(json!({"claim":"x-ms-sevsnpvm-is-debuggable","equals":"false"}), true);
        check(json!({"claim":"x-ms-sevsnpvm-is-debuggable","equals":true}), false);
        check(json!({"claim":"x-ms-sevsnpvm-hostdata","notEquals":"bb"}), true);
        check(json!({"claim":"x-ms-sevsnpvm-hostdata","notEquals":"aa"}), false);
        check(json!({"claim":"missing","notEquals":"aa"}), false);
        check(json!({"claim":"x-ms-sevsnpvm-guestsvn","greaterOrEquals":2}), true);
        check(json!({"claim":"x-ms-sevsnpvm-guestsvn","greater":2}), false);
        check(json!({"claim":"x-ms-sevsnpvm-guestsvn","less":3}), true);
        check(json!({"claim":"x-ms-sevsnpvm-guestsvn","lessOrEquals":1}), false);
        check(json!({"claim":"x-ms-sevsnpvm-hostdata","exists":true}), true);
        check(json!({"claim":"missing","exists":true}), false);
        check(json!({"claim":"missing","exists":false}), true);
        check(json!({"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"sevsnpvm"}), true);
        check(json!({"anyOf":[{"claim":"missing","exists":true},{"allOf":[{"claim":"x-ms-sevsnpvm-guestsvn","equals":2}]}]}), true);
        check(json!({"claim":"x-ms-sevsnpvm-guestsvn","condition":"equals","value":2}), true);
    }

    #[test]
    fn malformed_policies_name_the_place() {
        let refuse = |policy: Value, needle: &str| {
            let err = ReleasePolicy::from_value(&policy).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} lacks {needle}");
        };
        refuse(json!({"anyOf":[]}), "version");
        refuse(json!({"version":"9","anyOf":[]}), "9");
        refuse(json!({"version":"1.0.0","anyOf":[]}), "empty");
        refuse(json!({"version":"1.0.0","anyOf":[{"allOf":[{"claim":"a","equals":"b"}]}]}), "authority");
        refuse(json!({"version":"1.0.0","anyOf":[{"authority":MAA,"allOf":[{"claim":"a","bigger":1}]}]}), "$.anyOf[0].allOf[0].bigger");
        refuse(json!({"version":"1.0.0","anyOf":[{"authority":MAA,"allOf":[{"claim":"a","equals":1,"less":2}]}]}), "exactly one");
        refuse(json!({"version":"1.0.0","anyOf":[{"authority":MAA,"allOf":[{"claim":"a","equals":[1]}]}]}), "string, a number");
        refuse(json!({"version":"1.0.0","anyOf":[{"authority":MAA,"allOf":[{"claim":"a","exists":"yes"}]}]}), "exists");
        assert!(matches!(ReleasePolicy::parse(b"{"), Err(PolicyError::NotJson(_))));
        let mut deep = json!({"claim":"a","exists":true});
        for _ in 0..40 {
            deep = json!({"anyOf":[deep]});
        }
        refuse(json!({"version":"1.0.0","anyOf":[{"authority":MAA,"allOf":[deep]}]}), "deeper");
    }
}
