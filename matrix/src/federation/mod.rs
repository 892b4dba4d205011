//! The server-server API: how other homeservers are found (`discovery`), requests to them
//! (`client`, signed with `xmatrix`), their keys (`keys`), the endpoints this server answers
//! (`server`, `transactions`, `membership`, `invites`, `knocks`, `reads`), the checks on every PDU received
//! (`pdu`), the state at a gap in a room's graph (`gap`), the queue of what goes to them
//! (`sender`), and what is fetched from them: the past of a room (`backfill`), other
//! servers' directories and profiles (`directory`).

pub mod acl;
pub mod backfill;
pub mod client;
pub mod device_lists;
pub mod directory;
pub mod discovery;
pub mod e2ee;
pub mod gap;
pub mod invites;
pub mod keys;
pub mod knocks;
pub mod media;
pub mod membership;
pub mod pdu;
pub mod reads;
pub mod sender;
pub mod server;
pub mod transactions;
pub mod xmatrix;
