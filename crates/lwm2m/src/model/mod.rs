//! The object model: the OMA core objects (0–7), the IPSO objects a ward needs, and objects
//! users add as OMA DDF XML files.
//!
//! OWNED BY THE MODEL WORK (see the brief).
