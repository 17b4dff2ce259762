// filmless viewer, first stage (inlined into index.html by vite.config.js).
// A small classic script that runs before the
// Cornerstone bundle (3.7 MB of JavaScript that takes half a second to
// evaluate on a modest PC) and:
//   1. starts the DICOMweb requests the viewer needs first (series list,
//      default series metadata) and leaves the promises in
//      window.filmlessEarly.requests for the bundle to reuse;
//   2. for uncompressed images, draws the first slice at the header's window
//      on a preview canvas, so the radiologist sees the image while the
//      bundle starts; Cornerstone replaces it with the interactive view.
// It also defines the two rules the bundle must share with it:
// window.filmlessPickSeries (which series opens first) and
// window.filmlessOrderInstances (slice order).
(function () {
  'use strict';
  var NON_IMAGE = { SR: 1, PR: 1, KO: 1, SEG: 1, RTSTRUCT: 1, RTPLAN: 1, DOC: 1, REG: 1 };
  var UNCOMPRESSED = { '1.2.840.10008.1.2': 1, '1.2.840.10008.1.2.1': 1 };

  function tag(item, key) {
    var el = item && item[key];
    return el && el.Value && el.Value.length ? el.Value[0] : undefined;
  }
  function tags(item, key) {
    var el = item && item[key];
    return (el && el.Value) || [];
  }

  // The series shown first: the lowest SeriesNumber among image series.
  window.filmlessPickSeries = function (list) {
    var best = null;
    var bestKey = null;
    (list || []).forEach(function (item) {
      var uid = tag(item, '0020000E');
      if (!uid || NON_IMAGE[tag(item, '00080060')]) return;
      var num = Number(tag(item, '00200011'));
      var key = [isFinite(num) ? num : 1e9, uid];
      if (!bestKey || key[0] < bestKey[0] || (key[0] === bestKey[0] && key[1] < bestKey[1])) {
        best = uid;
        bestKey = key;
      }
    });
    return best;
  };

  // Slice order: by position along the slice normal (head first for axial
  // LPS), then instance number; instance number alone without geometry.
  window.filmlessOrderInstances = function (metadata) {
    var first = metadata[0];
    var iop = tags(first, '00200037').map(Number);
    var normal = null;
    if (iop.length === 6) {
      normal = [iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5], iop[0] * iop[4] - iop[1] * iop[3]];
    }
    var items = metadata.map(function (meta) {
      var pos = tags(meta, '00200032').map(Number);
      return {
        meta: meta,
        number: Number(tag(meta, '00200013')) || 0,
        position: normal && pos.length === 3 ? pos[0] * normal[0] + pos[1] * normal[1] + pos[2] * normal[2] : null,
      };
    });
    var byPosition = items.length > 1 && items.every(function (i) { return i.position !== null; });
    items.sort(function (a, b) {
      return byPosition ? b.position - a.position || a.number - b.number : a.number - b.number;
    });
    return items.map(function (i) { return i.meta; });
  };

  var params = new URLSearchParams(window.location.search);
  var study = params.get('study');
  var root = params.get('dicomweb') || '/dicomweb';
  if (!/^\/(?!\/)/.test(root)) root = '/dicomweb';
  root = root.replace(/\/+$/, '');
  var token = params.get('token');
  var early = (window.filmlessEarly = { root: root, requests: {}, preview: null });
  var done;
  // Resolves once the preview is drawn or known to be impossible; the bundle
  // is started then (src/boot.js), so it does not hold the main thread while
  // the first image is on its way.
  early.previewSettled = new Promise(function (resolve) { done = resolve; });
  if (!study || !window.fetch || !window.Promise) {
    done(false);
    return;
  }
  setTimeout(function () { done(false); }, 1500);
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
      var pick = res.json && window.filmlessPickSeries(res.json);
      if (!pick) return done(false);
      var seriesBase = base + '/series/' + encodeURIComponent(pick);
      return getJson(seriesBase + '/metadata').then(function (meta) {
        if (!meta.json || !meta.json.length) return done(false);
        var first = window.filmlessOrderInstances(meta.json)[0];
        return preview(seriesBase, first);
      });
    })
    .then(null, function () { done(false); });

  function preview(seriesBase, meta) {
    var rows = Number(tag(meta, '00280010'));
    var cols = Number(tag(meta, '00280011'));
    var bits = Number(tag(meta, '00280100'));
    var spp = Number(tag(meta, '00280002')) || 1;
    var frames = Number(tag(meta, '00280008')) || 1;
    var photometric = tag(meta, '00280004') || 'MONOCHROME2';
    if (spp !== 1 || frames !== 1 || (bits !== 8 && bits !== 16) || !rows || !cols || !/^MONOCHROME/.test(photometric)) {
      return done(false);
    }
    var url = seriesBase + '/instances/' + encodeURIComponent(tag(meta, '00080018')) + '/frames/1';
    var h = { Accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*' };
    if (token) h['X-Share-Token'] = token;
    return fetch(url, { headers: h, credentials: 'same-origin' }).then(function (r) {
      var type = r.headers.get('Content-Type') || '';
      var ts = (/transfer-syntax=([0-9.]+)/.exec(type) || [])[1] || '1.2.840.10008.1.2';
      if (r.status !== 200 || !UNCOMPRESSED[ts]) return done(false);
      return r.arrayBuffer().then(function (buf) {
        var bytes = new Uint8Array(buf);
        var start = findHeaderEnd(bytes);
        var length = rows * cols * (bits / 8);
        if (start < 0 || start + length > bytes.length) return done(false);
        draw(meta, bytes, start, rows, cols, bits, photometric);
        done(true);
      });
    });
  }

  function findHeaderEnd(bytes) {
    for (var i = 0; i + 3 < Math.min(bytes.length, 4096); i++) {
      if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i + 4;
    }
    return -1;
  }

  function draw(meta, bytes, start, rows, cols, bits, photometric) {
    var n = rows * cols;
    var signed = Number(tag(meta, '00280103')) === 1;
    var slope = Number(tag(meta, '00281053')) || 1;
    var intercept = Number(tag(meta, '00281052')) || 0;
    var copy = bytes.slice(start, start + n * (bits / 8)).buffer;
    var raw = bits === 16 ? (signed ? new Int16Array(copy) : new Uint16Array(copy)) : signed ? new Int8Array(copy) : new Uint8Array(copy);
    var center = Number(tag(meta, '00281050'));
    var width = Number(tag(meta, '00281051'));
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
    var spacing = tags(meta, '00280030').map(Number);
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
})();
