// The operations page's charts (emr/templates/ops/index.html), drawn with the
// vendored Chart.js (emr/static/vendor/chartjs). Every figure and label comes
// from the page's JSON block (texts from emr/i18n/vi.json); the tables on the
// page carry the same numbers without JavaScript.
(function () {
  'use strict';
  const block = document.getElementById('ops-data');
  if (!block || typeof window.Chart === 'undefined') return;
  const data = JSON.parse(block.textContent);
  const L = data.labels;
  const palette = ['#0b5cad', '#1e7a3c', '#b3261e', '#8a5a00', '#6a3fa0', '#00838f', '#5b6675', '#c2185b', '#2e7d32', '#ef6c00'];
  Chart.defaults.font.family = '"Noto Sans", "DejaVu Sans", system-ui, sans-serif';
  Chart.defaults.animation = false; // figures, not a show; also keeps screenshots stable

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (canvas) new Chart(canvas, config);
  }

  const modalities = Object.keys(data.per_day.series);
  draw('chart-per-day', {
    type: 'bar',
    data: {
      labels: data.per_day.days,
      datasets: modalities.map((m, i) => ({ label: m, data: data.per_day.series[m], backgroundColor: palette[i % palette.length] })),
    },
    options: {
      maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: L.studies } } },
    },
  });

  // Minutes while the slowest 90th percentile is under two hours, hours beyond.
  const slowest = Math.max(0, ...data.turnaround.map((r) => r.p90_s || 0));
  const unit = slowest < 7200 ? 60 : 3600;
  const hours = (s) => (s === null || s === undefined ? null : Math.round((s / unit) * 100) / 100);
  draw('chart-turnaround', {
    type: 'bar',
    data: {
      labels: data.turnaround.map((r) => L.steps[r.step]),
      datasets: [
        { label: L.median, data: data.turnaround.map((r) => hours(r.median_s)), backgroundColor: palette[0] },
        { label: L.p90, data: data.turnaround.map((r) => hours(r.p90_s)), backgroundColor: palette[3] },
      ],
    },
    options: {
      indexAxis: 'y',
      maintainAspectRatio: false,
      scales: { x: { beginAtZero: true, title: { display: true, text: unit === 60 ? L.minutes : L.hours } } },
    },
  });

  draw('chart-unread', {
    type: 'bar',
    data: {
      labels: data.buckets.map((k) => L.ages[k]),
      datasets: [{ label: L.unread, data: data.buckets.map((k) => data.unread[k]), backgroundColor: data.buckets.map((k, i) => (i >= 3 ? palette[2] : palette[0])) }],
    },
    options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
})();
