//! The order in which the matches of the routes attached to one listener are tried, as the spec orders them.
//! Smaller [`Precedence`] wins: sort ascending and take the first that matches.
//!
//! HTTPRoute, across every rule of every route (for one hostname):
//! 1. an `Exact` path match, then a `PathPrefix` with the most characters (a `RegularExpression` path, whose
//!    place the spec leaves to implementations, comes after the `Exact` ones and before every prefix, longer
//!    pattern first, as Envoy Gateway orders them: so a catch-all `/` prefix does not hide it);
//! 2. a method match;
//! 3. the most header matches;
//! 4. the most query parameter matches.
//!
//! GRPCRoute: the most characters in the service match, then in the method match, then the most header matches.
//!
//! Ties: the oldest route (`creationTimestamp`; a route without one counts as newest), then the route first by
//! `namespace/name`, then the first rule in the route, then the first match in the rule.

use std::cmp::{Ordering, Reverse};

use k8s_openapi::jiff::Timestamp;

use super::{GrpcRouteMatch, HttpRouteMatch};

/// How specific a match is; greater is more specific.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Specificity {
    Http {
        /// 3 `Exact`, 2 `RegularExpression`, 1 `PathPrefix`.
        path_kind: u8,
        path_len: usize,
        method: bool,
        headers: usize,
        query_params: usize,
    },
    Grpc {
        service_len: usize,
        method_len: usize,
        headers: usize,
    },
}

impl Specificity {
    pub fn http(m: &HttpRouteMatch) -> Self {
        let path_kind = match m.path.type_.as_str() {
            "Exact" => 3,
            "RegularExpression" => 2,
            "PathPrefix" => 1,
            _ => 0,
        };
        Specificity::Http {
            path_kind,
            path_len: m.path.value.len(),
            method: m.method.is_some(),
            headers: m.headers.len(),
            query_params: m.query_params.len(),
        }
    }

    pub fn grpc(m: &GrpcRouteMatch) -> Self {
        let method = m.method.as_ref();
        Specificity::Grpc {
            service_len: method.and_then(|m| m.service.as_ref()).map_or(0, String::len),
            method_len: method.and_then(|m| m.method.as_ref()).map_or(0, String::len),
            headers: m.headers.len(),
        }
    }
}

/// The sort key of one match of one rule of one route. `Ord`: the winner sorts first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precedence {
    pub specificity: Specificity,
    /// The route's `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    pub namespace: String,
    pub name: String,
    pub rule: usize,
    pub match_index: usize,
}

impl Precedence {
    fn key(&self) -> impl Ord + '_ {
        (
            Reverse(&self.specificity),
            // Oldest first; without a timestamp, after every route that has one.
            self.created.is_none(),
            self.created,
            &self.namespace,
            &self.name,
            self.rule,
            self.match_index,
        )
    }
}

impl Ord for Precedence {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Precedence {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(yaml: &str) -> Specificity {
        Specificity::http(&serde_yaml::from_str(yaml).unwrap())
    }

    fn key(s: Specificity, created: Option<&str>, ns: &str, name: &str, rule: usize, m: usize) -> Precedence {
        Precedence {
            specificity: s,
            created: created.map(|t| t.parse().unwrap()),
            namespace: ns.into(),
            name: name.into(),
            rule,
            match_index: m,
        }
    }

    /// The spec's order, each entry beating every later one.
    #[test]
    fn http_order() {
        let t = Some("2024-01-01T00:00:00Z");
        let later = Some("2024-06-01T00:00:00Z");
        let ordered = vec![
            key(http("path: {type: Exact, value: /a}"), later, "z", "z", 9, 9),
            key(http("path: {type: Exact, value: /}"), later, "z", "z", 9, 9),
            key(
                http("path: {type: RegularExpression, value: /.*/long}"),
                later,
                "a",
                "a",
                0,
                0,
            ),
            key(
                http("path: {type: RegularExpression, value: /.*}"),
                later,
                "a",
                "a",
                0,
                0,
            ),
            key(http("path: {type: PathPrefix, value: /abc}"), later, "z", "z", 9, 9),
            key(
                http("path: {type: PathPrefix, value: /ab}\nmethod: GET"),
                later,
                "z",
                "z",
                9,
                9,
            ),
            key(
                http("path: {type: PathPrefix, value: /a}\nheaders: [{name: a, value: b}]"),
                later,
                "z",
                "z",
                9,
                9,
            ),
            key(
                http("path: {type: PathPrefix, value: /b}\nqueryParams: [{name: a, value: b}, {name: c, value: d}]"),
                later,
                "z",
                "z",
                9,
                9,
            ),
            key(
                http("path: {type: PathPrefix, value: /c}\nqueryParams: [{name: a, value: b}]"),
                later,
                "z",
                "z",
                9,
                9,
            ),
            // Same specificity: oldest route, then namespace/name, then rule, then match.
            key(http("{}"), t, "z", "z", 9, 9),
            key(http("{}"), later, "a", "a", 9, 9),
            key(http("{}"), later, "a", "b", 0, 1),
            key(http("{}"), later, "a", "b", 1, 0),
            key(http("{}"), later, "a", "b", 1, 1),
            key(http("{}"), None, "a", "a", 0, 0),
        ];
        let mut shuffled = ordered.clone();
        shuffled.reverse();
        shuffled.swap(0, 5);
        shuffled.sort();
        assert_eq!(shuffled, ordered);
    }

    #[test]
    fn grpc_order() {
        let grpc = |yaml: &str| Specificity::grpc(&serde_yaml::from_str(yaml).unwrap());
        let ordered = vec![
            grpc("method: {service: foo.Long, method: M}"),
            grpc("method: {service: foo.A, method: Method}"),
            grpc("method: {service: foo.A, method: M}\nheaders: [{name: a, value: b}]"),
            grpc("method: {service: foo.A, method: M}"),
            grpc("method: {method: M}"),
            grpc("{}"),
        ];
        let mut sorted = ordered.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(sorted, ordered);
    }
}
