// filmless viewer, first stage: a small classic script inlined into
// index.html (with src/rules.js, by src/inline-early.js) that runs before
// (and alongside) the Cornerstone bundle and:
//   1. starts the DICOMweb requests the viewer needs first (series list,
//      first series' metadata, its first slice) and leaves the promises in
//      window.filmlessEarly.requests for the bundle to reuse;
//   2. for uncompressed images, draws the first slice at the header's window
//      on a preview canvas and keeps its bytes (window.filmlessEarly.frame),
//      so the bundle shows the interactive image without fetching it again.
import { readConfig, pickFirstSeries, orderInstances, tagValue, tagValues, UNCOMPRESSED_SYNTAXES } from './rules.js';

var config = readConfig(window.location.search, window.location.origin);
var study = config.study;
var root = config.root;
var token = config.token;
var early = (window.filmlessEarly = { root: root, requests: {}, preview: null, frame: null });
var resolveFrame;
function mark(name) {
  if (window.performance && performance.mark) performance.mark('filmless:' + name);
}
// frameSettled: early.frame holds the first slice's bytes, or it never
// will; the bundle waits for it rather than fetching the slice again.
early.frameSettled = new Promise(function (resolve) { resolveFrame = resolve; });
function done() {
  resolveFrame(Boolean(early.frame));
}
if (study && window.fetch && window.Promise) start();
else done();

function start() {
  var headers = { Accept: 'application/dicom+json' };
  if (token) headers['X-Share-Token'] = token;

  function getJson(url) {
    var p = fetch(url, { headers: headers, credentials: 'same-origin' }).then(function (r) {
      return r.text().then(function (text) {
        var json;
        if (r.status === 200 && text) {
          try { json = JSON.parse(text); } catch (e) { json = undefined; }
        }
        return { status: r.status, headers: r.headers, text: text, json: json };
      });
    });
    early.requests[url] = p;
    return p;
  }

  var base = root + '/studies/' + encodeURIComponent(study);
  getJson(base + '/series')
    .then(function (res) {
      mark('early-series');
      var pick = res.json && (config.series || pickFirstSeries(res.json));
      if (!pick) return done();
      var seriesBase = base + '/series/' + encodeURIComponent(pick);
      return getJson(seriesBase + '/metadata').then(function (meta) {
        mark('early-metadata');
        if (!meta.json || !meta.json.length) return done();
        var first = orderInstances(meta.json)[0];
        return preview(pick, seriesBase, first);
      });
    })
    .then(null, function () { done(); });

  function preview(seriesUid, seriesBase, meta) {
    var rows = Number(tagValue(meta, '00280010'));
    var cols = Number(tagValue(meta, '00280011'));
    var bits = Number(tagValue(meta, '00280100'));
    var spp = Number(tagValue(meta, '00280002')) || 1;
    var frames = Number(tagValue(meta, '00280008')) || 1;
    var photometric = tagValue(meta, '00280004') || 'MONOCHROME2';
    if (spp !== 1 || frames !== 1 || (bits !== 8 && bits !== 16) || !rows || !cols || !/^MONOCHROME/.test(photometric)) {
      return done();
    }
    var sop = tagValue(meta, '00080018');
    var url = seriesBase + '/instances/' + encodeURIComponent(sop) + '/frames/1';
    var h = { Accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*' };
    if (token) h['X-Share-Token'] = token;
    return fetch(url, { headers: h, credentials: 'same-origin' }).then(function (r) {
      var type = r.headers.get('Content-Type') || '';
      var ts = (/transfer-syntax=([0-9.]+)/.exec(type) || [])[1] || '1.2.840.10008.1.2';
      if (r.status !== 200 || UNCOMPRESSED_SYNTAXES.indexOf(ts) < 0) return done();
      return r.arrayBuffer().then(function (buf) {
        var bytes = new Uint8Array(buf);
        var start = findHeaderEnd(bytes);
        var length = rows * cols * (bits / 8);
        if (start < 0 || start + length > bytes.length) return done();
        // The pixel data, kept for the bundle: the same slice is not fetched twice.
        var pixels = bytes.slice(start, start + length);
        early.frame = { study: study, series: seriesUid, sop: sop, frame: 1, transferSyntax: ts, pixels: pixels, meta: meta };
        mark('early-frame');
        resolveFrame(true);
        draw(meta, pixels, rows, cols, bits, photometric);
        mark('preview');
        done();
      });
    });
  }
}

function findHeaderEnd(bytes) {
  for (var i = 0; i + 3 < Math.min(bytes.length, 4096); i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i + 4;
  }
  return -1;
}

function draw(meta, pixels, rows, cols, bits, photometric) {
  var n = rows * cols;
  var signed = Number(tagValue(meta, '00280103')) === 1;
  var slope = Number(tagValue(meta, '00281053')) || 1;
  var intercept = Number(tagValue(meta, '00281052')) || 0;
  var copy = pixels.buffer;
  var raw = bits === 16 ? (signed ? new Int16Array(copy) : new Uint16Array(copy)) : signed ? new Int8Array(copy) : new Uint8Array(copy);
  var center = Number(tagValue(meta, '00281050'));
  var width = Number(tagValue(meta, '00281051'));
  var i;
  if (!isFinite(center) || !isFinite(width) || width < 1) {
    var lo = Infinity;
    var hi = -Infinity;
    for (i = 0; i < n; i++) {
      if (raw[i] < lo) lo = raw[i];
      if (raw[i] > hi) hi = raw[i];
    }
    lo = lo * slope + intercept;
    hi = hi * slope + intercept;
    width = Math.max(1, hi - lo);
    center = lo + width / 2;
  }
  // DICOM linear VOI (PS3.3 C.11.2.1.2.1) after the modality LUT.
  var k = 255 / (width - 1);
  var offset = (intercept - (center - 0.5)) * k + 127.5;
  var m = slope * k;
  var invert = photometric === 'MONOCHROME1';
  var image = new ImageData(cols, rows);
  var out = image.data;
  for (i = 0; i < n; i++) {
    var v = raw[i] * m + offset;
    v = v < 0 ? 0 : v > 255 ? 255 : v;
    if (invert) v = 255 - v;
    var j = i * 4;
    out[j] = out[j + 1] = out[j + 2] = v;
    out[j + 3] = 255;
  }
  var grid = document.getElementById('grid');
  if (!grid || early.preview === 'replaced') return;
  var holder = document.createElement('div');
  holder.className = 'viewport preview';
  var canvas = document.createElement('canvas');
  holder.appendChild(canvas);
  grid.appendChild(holder);
  var dpr = window.devicePixelRatio || 1;
  var w = Math.round(holder.clientWidth * dpr);
  var hgt = Math.round(holder.clientHeight * dpr);
  canvas.width = w;
  canvas.height = hgt;
  var spacing = tagValues(meta, '00280030').map(Number);
  var aspect = spacing.length === 2 && spacing[0] > 0 && spacing[1] > 0 ? spacing[0] / spacing[1] : 1;
  var scale = Math.min(w / cols, hgt / (rows * aspect));
  var dw = cols * scale;
  var dh = rows * aspect * scale;
  var src = document.createElement('canvas');
  src.width = cols;
  src.height = rows;
  src.getContext('2d').putImageData(image, 0, 0);
  var ctx = canvas.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, w, hgt);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'medium';
  ctx.drawImage(src, (w - dw) / 2, (hgt - dh) / 2, dw, dh);
  early.preview = holder;
}
