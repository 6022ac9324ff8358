//! CoRE link format (RFC 6690) as LwM2M uses it: the object list of Register/Update
//! (`</>;rt="oma.lwm2m";ct=11543,</1/0>,</3303>;ver=1.1`) and Discover answers
//! (`</3/0/7>;dim=2,</3303/0/5700>;pmin=10`).
//!
//! OWNED BY THE CODEC WORK (see the brief).
