//! Reading SpiderIPPools and SpiderSubnets as the pure core's sets: the helpers live with the
//! allocation store (the CNI plugin reads the same objects the same way).

pub use spiderpool_store::objects::*;
