/**
 * FHIR R4's syntax for the two names hx checks on every path: a resource
 * `id` (the `id` datatype: 1 to 64 of `A-Z a-z 0-9 - .`) and a resource type
 * name (a capital letter, then letters; at most 64 as hx reads them). One
 * definition, so that the readers, deid, bundle and the commands' options
 * agree on what a valid id or type is.
 */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
export const RESOURCE_TYPE_NAME = /^[A-Z][A-Za-z]{0,63}$/;
