// Validates HLS playlists with hls-parser in strict mode (npm devDependency), plus the bandwidth
// rules of RFC 8216 the parser does not check: prints one line per problem, exits 1 on any.
//   node scripts/check-hls.js PLAYLIST.m3u8 [...]
"use strict";
const fs = require("fs");
const path = require("path");
const HLS = require("hls-parser");

HLS.setOptions({ strictMode: true });
let bad = 0;
for (const file of process.argv.slice(2)) {
  try {
    const playlist = HLS.parse(fs.readFileSync(file, "utf8"));
    if (playlist.isMasterPlaylist) {
      for (const v of playlist.variants) {
        if (!v.bandwidth || !v.averageBandwidth || !v.resolution || !v.codecs || !v.frameRate) {
          throw new Error(`variant ${v.uri} lacks BANDWIDTH, AVERAGE-BANDWIDTH, RESOLUTION, CODECS or FRAME-RATE`);
        }
      }
    } else if (playlist.targetDuration < 1) {
      throw new Error(`EXT-X-TARGETDURATION ${playlist.targetDuration} < 1`);
    }
    process.stdout.write(`ok ${file}\n`);
  } catch (err) {
    bad += 1;
    process.stdout.write(`FAIL ${path.resolve(file)}: ${err.message}\n`);
  }
}
process.exit(bad ? 1 : 0);
