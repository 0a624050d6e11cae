'use strict';
// The release's identity, written by examples/node-app/build.sh into build.json.
const fs = require('node:fs');
const path = require('node:path');

let build = { version: '0.0.0-dev', broken: false };
try {
  build = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'build.json'), 'utf8'));
} catch {
  // a checkout without build.json runs as a development build
}
module.exports = build;
