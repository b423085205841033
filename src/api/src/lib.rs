//! spiderpool.spidernet.io/v2beta1 API types.
