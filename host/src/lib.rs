//! gatehouse: a programmable API gateway.
