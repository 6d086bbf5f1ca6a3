package exchangev1

import _ "embed"

// OpenAPI is the OpenAPI v2 document of the REST API, generated from the
// contracts, exchange_http.yaml and exchange_openapi.yaml.
//
//go:embed exchange.swagger.json
var OpenAPI []byte
