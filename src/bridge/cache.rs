//! What the bridge looks up for every message, kept in memory in front of the store: which
//! ghosts have accounts, and the direct room of each pair both ways (also that a room is not
//! one). Every change of a direct room goes through here, so the copies stay true.

use std::collections::{HashMap, HashSet};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use xmpp_parsers::jid::Jid;

use super::{Bridge, BridgeError};

/// The most entries of each map; beyond it, a map starts afresh.
const MAX_ENTRIES: usize = 100_000;

/// A direct room's pair: `(local account, XMPP user)`.
pub(super) type Pair = (String, String);

#[derive(Default)]
pub(super) struct Cache {
    ghosts: HashSet<OwnedUserId>,
    rooms: HashMap<(String, String), OwnedRoomId>,
    /// `None`: the room is not a direct room of the bridge.
    pairs: HashMap<OwnedRoomId, Option<Pair>>,
    /// Counts the changes of direct rooms: a look-up that raced with one does not keep its
    /// (perhaps outdated) answer.
    generation: u64,
}

fn bounded<K, V>(map: &mut HashMap<K, V>) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
}

impl Bridge {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn ghost_known(&self, ghost: &UserId) -> bool {
        self.cache().ghosts.contains(ghost)
    }

    pub(super) fn remember_ghost(&self, ghost: &UserId) {
        let mut cache = self.cache();
        if cache.ghosts.len() >= MAX_ENTRIES {
            cache.ghosts.clear();
        }
        cache.ghosts.insert(ghost.to_owned());
    }

    pub(super) fn forget_ghost(&self, ghost: &UserId) {
        self.cache().ghosts.remove(ghost);
    }

    /// The direct room of a pair, if there is one.
    pub(super) async fn room_of_pair(
        &self,
        local: &UserId,
        remote: &Jid,
    ) -> Result<Option<OwnedRoomId>, BridgeError> {
        let key = (local.to_string(), remote.to_string());
        let generation = {
            let cache = self.cache();
            if let Some(room) = cache.rooms.get(&key) {
                return Ok(Some(room.clone()));
            }
            cache.generation
        };
        let Some(room) = self
            .store
            .xmpp_direct_room(local.as_str(), remote.as_str())
            .await?
        else {
            return Ok(None);
        };
        let room = RoomId::parse(&room)
            .map_err(|e| causeway_matrix::error::Error::Internal(format!("stored room id: {e}")))?;
        let mut cache = self.cache();
        if cache.generation == generation {
            bounded(&mut cache.rooms);
            cache.rooms.insert(key, room.clone());
        }
        Ok(Some(room))
    }

    /// The pair of a direct room, or `None` for any other room.
    pub(super) async fn pair_of_room(&self, room: &str) -> Result<Option<Pair>, BridgeError> {
        let Ok(room_id) = RoomId::parse(room) else {
            return Ok(None);
        };
        let generation = {
            let cache = self.cache();
            if let Some(pair) = cache.pairs.get(&room_id) {
                return Ok(pair.clone());
            }
            cache.generation
        };
        let pair = self.store.xmpp_direct_pair(room).await?;
        let mut cache = self.cache();
        if cache.generation == generation {
            bounded(&mut cache.pairs);
            cache.pairs.insert(room_id, pair.clone());
        }
        Ok(pair)
    }

    /// Records the direct room of a pair: in place of the one before with `replace`, else
    /// only when it has none.
    pub(super) async fn record_room_of_pair(
        &self,
        local: &UserId,
        remote: &Jid,
        room: &RoomId,
        replace: bool,
    ) -> Result<(), BridgeError> {
        let (local_user, remote_jid) = (local.as_str(), remote.as_str());
        if replace {
            self.store
                .replace_xmpp_direct_room(local_user, remote_jid, room.as_str())
                .await?;
        } else {
            self.store
                .set_xmpp_direct_room(local_user, remote_jid, room.as_str())
                .await?;
        }
        self.forget_pair(local, remote, room);
        Ok(())
    }

    /// Drops what is known of a pair and a room after a change, so that it is read anew.
    fn forget_pair(&self, local: &UserId, remote: &Jid, room: &RoomId) {
        let mut cache = self.cache();
        cache.generation += 1;
        let key = (local.to_string(), remote.to_string());
        if let Some(old) = cache.rooms.remove(&key) {
            cache.pairs.remove(&old);
        }
        cache.pairs.remove(room);
    }
}
