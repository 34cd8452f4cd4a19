package api

import _ "embed"

// Spec is the API's OpenAPI 3.1 document (JSON). Tests check that it lists
// exactly the routes New registers.
//
//go:embed openapi.json
var Spec []byte
