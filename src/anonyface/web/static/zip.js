// A zip file (stored, not compressed: photos and videos are compressed already) from
// [{name, blob}], made in the browser: no library, nothing loaded from elsewhere.
"use strict";
const Zip = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i++) c = table[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }
  function header(size, fields) {
    const buf = new DataView(new ArrayBuffer(size));
    let at = 0;
    for (const [bytes, value] of fields) {
      if (bytes === 2) buf.setUint16(at, value, true); else buf.setUint32(at, value, true);
      at += bytes;
    }
    return new Uint8Array(buf.buffer);
  }
  async function make(files) {
    const parts = [], central = [];
    let offset = 0;
    const now = new Date();
    const time = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
    const date = ((now.getFullYear() - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
    const used = new Set();
    for (const f of files) {
      let name = f.name, i = 1;
      while (used.has(name)) name = f.name.replace(/(\.[^.]*)?$/, `-${i++}$1`);
      used.add(name);
      const nameBytes = new TextEncoder().encode(name);
      const data = new Uint8Array(await f.blob.arrayBuffer());
      const crc = crc32(data);
      const local = header(30, [[4, 0x04034b50], [2, 20], [2, 0x0800], [2, 0], [2, time], [2, date],
        [4, crc], [4, data.length], [4, data.length], [2, nameBytes.length], [2, 0]]);
      parts.push(local, nameBytes, data);
      central.push(header(46, [[4, 0x02014b50], [2, 20], [2, 20], [2, 0x0800], [2, 0], [2, time], [2, date],
        [4, crc], [4, data.length], [4, data.length], [2, nameBytes.length], [2, 0], [2, 0], [2, 0], [2, 0],
        [4, 0], [4, offset]]), nameBytes);
      offset += local.length + nameBytes.length + data.length;
    }
    const size = central.reduce((s, p) => s + p.length, 0);
    const end = header(22, [[4, 0x06054b50], [2, 0], [2, 0], [2, files.length], [2, files.length],
      [4, size], [4, offset], [2, 0]]);
    return new Blob([...parts, ...central, end], { type: "application/zip" });
  }
  return { make, crc32 };
})();
