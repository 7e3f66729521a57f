// Stands in for net, tls, zlib and crypto in the browser bundle: kafkajs loads them for its own TCP sockets,
// gzip and SCRAM, none of which the page uses.
export default {};
