//! Our BFT chain, wire-compatible with the Python node's node/chain/: canonical JSON
//! (codec), signed blocks/votes/proposals/certificates (block), the consensus state
//! machine (consensus), the block store (store), gossip encoding and gossipsub settings
//! (gossip), the sync wire (sync) and its client (catchup), and the service that wires
//! them into the swarm task (service).

pub mod block;
pub mod catchup;
pub mod codec;
pub mod consensus;
pub mod gossip;
pub mod service;
pub mod store;
pub mod sync;
