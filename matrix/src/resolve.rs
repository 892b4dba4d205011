//! State resolution over stored events: what the algorithm of a room's version needs (the
//! forks' auth chains, their events, for version 12 the conflicted state subgraph) is read
//! from the store first, then the resolution runs in memory (state resolution v2, and v2.1
//! from room version 12).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId};

use crate::error::Error;
use crate::pdu::Pdu;
use crate::store::{StateMap, Store};

/// Events already in memory, by id.
pub type Known = HashMap<OwnedEventId, Arc<Pdu>>;

/// Resolves the states of a room's forks into one. A single state, or states that agree,
/// need no resolution.
pub async fn resolve(
    store: &Store,
    rules: &RoomVersionRules,
    states: &[&StateMap],
    known: &Known,
) -> Result<StateMap, Error> {
    match states {
        [] => return Ok(StateMap::new()),
        [only] => return Ok((*only).clone()),
        [first, rest @ ..] if rest.iter().all(|state| state == first) => {
            return Ok((*first).clone());
        }
        _ => {}
    }
    let v2 = rules.state_res.v2_rules().ok_or_else(|| {
        Error::Internal("the room's version does not use state resolution v2".into())
    })?;
    let mut starts: Vec<String> = states
        .iter()
        .flat_map(|state| state.values().cloned())
        .collect();
    starts.sort();
    starts.dedup();
    let mut graph = store.auth_graph(&starts).await?;
    // Events not stored yet (the one being received) are known in memory.
    let mut further = Vec::new();
    for id in &starts {
        if !graph.contains_key(id)
            && let Some(pdu) = EventId::parse(id).ok().and_then(|id| known.get(&id))
        {
            let auth: Vec<String> = pdu.auth_events.iter().map(ToString::to_string).collect();
            further.extend(auth.iter().filter(|a| !graph.contains_key(*a)).cloned());
            graph.insert(id.clone(), auth);
        }
    }
    if !further.is_empty() {
        graph.extend(store.auth_graph(&further).await?);
    }
    let graph = AuthGraph::new(&graph)?;

    // Every event of the graph, for the algorithm to read.
    let mut events: Known = HashMap::new();
    let mut wanted = Vec::new();
    for id in graph.edges.keys() {
        match known.get(id) {
            Some(pdu) => {
                events.insert(id.clone(), pdu.clone());
            }
            None => wanted.push(id.to_string()),
        }
    }
    for row in store.events(&wanted).await? {
        let pdu = Pdu::from_row(&row)?;
        events.insert(pdu.event_id.clone(), Arc::new(pdu));
    }

    let maps: Vec<ruma::state_res::StateMap<OwnedEventId>> = states
        .iter()
        .map(|state| to_ruma(state))
        .collect::<Result<_, _>>()?;
    let auth_chains: Vec<EventIdSet<OwnedEventId>> =
        maps.iter().map(|map| graph.chain(map.values())).collect();
    let resolved = ruma::state_res::resolve(
        &rules.authorization,
        v2,
        &maps,
        auth_chains,
        |id: &EventId| events.get(id).cloned(),
        |conflicted| Some(graph.conflicted_subgraph(conflicted.values().flatten())),
    )
    .map_err(|e| Error::Internal(format!("state resolution: {e}")))?;
    Ok(resolved
        .into_iter()
        .map(|((kind, key), id)| ((kind.to_string(), key), id.to_string()))
        .collect())
}

fn to_ruma(state: &StateMap) -> Result<ruma::state_res::StateMap<OwnedEventId>, Error> {
    state
        .iter()
        .map(|((kind, key), id)| {
            let id = EventId::parse(id)
                .map_err(|e| Error::Internal(format!("stored event id {id}: {e}")))?;
            Ok(((StateEventType::from(kind.as_str()), key.clone()), id))
        })
        .collect()
}

/// The auth edges among a set of events.
struct AuthGraph {
    edges: HashMap<OwnedEventId, Vec<OwnedEventId>>,
}

impl AuthGraph {
    fn new(graph: &HashMap<String, Vec<String>>) -> Result<AuthGraph, Error> {
        let parse = |id: &String| {
            EventId::parse(id).map_err(|e| Error::Internal(format!("stored event id {id}: {e}")))
        };
        let edges = graph
            .iter()
            .map(|(id, auth)| {
                Ok((
                    parse(id)?,
                    auth.iter().map(parse).collect::<Result<_, _>>()?,
                ))
            })
            .collect::<Result<_, Error>>()?;
        Ok(AuthGraph { edges })
    }

    /// The auth chain of a set of events: every event reachable from them along
    /// `auth_events`, not the events themselves unless reachable.
    fn chain<'a>(&self, from: impl Iterator<Item = &'a OwnedEventId>) -> EventIdSet<OwnedEventId> {
        let mut chain = EventIdSet::new();
        let mut queue: VecDeque<&OwnedEventId> = from
            .flat_map(|id| self.edges.get(id).into_iter().flatten())
            .collect();
        while let Some(id) = queue.pop_front() {
            if chain.insert(id.clone()) {
                queue.extend(self.edges.get(id).into_iter().flatten());
            }
        }
        chain
    }

    /// The conflicted state subgraph (room version 12): the events that lie on an auth path
    /// from one conflicted event to another, the conflicted events included.
    fn conflicted_subgraph<'a>(
        &self,
        conflicted: impl Iterator<Item = &'a OwnedEventId>,
    ) -> EventIdSet<OwnedEventId> {
        let conflicted: HashSet<&OwnedEventId> = conflicted.collect();
        // Everything the conflicted events reach, themselves included.
        let mut reached: HashSet<&OwnedEventId> = HashSet::new();
        let mut queue: VecDeque<&OwnedEventId> = conflicted.iter().copied().collect();
        while let Some(id) = queue.pop_front() {
            if reached.insert(id) {
                queue.extend(self.edges.get(id).into_iter().flatten());
            }
        }
        // Of those, the ones from which a conflicted event is reached: walk the edges
        // backwards from the conflicted events, staying among the reached events.
        let mut reverse: HashMap<&OwnedEventId, Vec<&OwnedEventId>> = HashMap::new();
        for id in &reached {
            for auth in self.edges.get(*id).into_iter().flatten() {
                reverse.entry(auth).or_default().push(id);
            }
        }
        let mut subgraph = EventIdSet::new();
        let mut queue: VecDeque<&OwnedEventId> = conflicted.iter().copied().collect();
        while let Some(id) = queue.pop_front() {
            if subgraph.insert(id.clone()) {
                queue.extend(reverse.get(id).into_iter().flatten().copied());
            }
        }
        subgraph
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> OwnedEventId {
        EventId::parse(format!("${name}")).unwrap()
    }

    fn graph(edges: &[(&str, &[&str])]) -> AuthGraph {
        let map: HashMap<String, Vec<String>> = edges
            .iter()
            .map(|(event, auth)| {
                (
                    format!("${event}"),
                    auth.iter().map(|a| format!("${a}")).collect(),
                )
            })
            .collect();
        AuthGraph::new(&map).unwrap()
    }

    fn names(set: &EventIdSet<OwnedEventId>) -> Vec<String> {
        let mut names: Vec<String> = set.iter().map(|id| id.as_str()[1..].to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn auth_chain_follows_auth_events_transitively() {
        let graph = graph(&[
            ("create", &[]),
            ("join", &["create"]),
            ("power", &["create", "join"]),
            ("msg", &["power", "join", "create"]),
            ("other", &["create"]),
        ]);
        assert_eq!(
            names(&graph.chain([id("power")].iter())),
            ["create", "join"]
        );
        assert_eq!(
            names(&graph.chain([id("msg"), id("other")].iter())),
            ["create", "join", "power"]
        );
    }

    #[test]
    fn conflicted_subgraph_is_what_lies_between_conflicted_events() {
        // power2 → power1b → power1 (both powers conflicted); join lies outside any path
        // between them, create only below them.
        let graph = graph(&[
            ("create", &[]),
            ("join", &["create"]),
            ("power1", &["create", "join"]),
            ("power1b", &["power1", "create"]),
            ("power2", &["power1b", "create", "join"]),
            ("topic", &["create"]),
        ]);
        let conflicted = [id("power1"), id("power2")];
        assert_eq!(
            names(&graph.conflicted_subgraph(conflicted.iter())),
            ["power1", "power1b", "power2"]
        );
        // Unrelated conflicted events share no path: only themselves.
        let conflicted = [id("topic"), id("join")];
        assert_eq!(
            names(&graph.conflicted_subgraph(conflicted.iter())),
            ["join", "topic"]
        );
    }
}
