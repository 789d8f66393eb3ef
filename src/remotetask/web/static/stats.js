// The activity panel of the management page: live charts and the per-task
// table, from GET /api/stats (see remotetask.stats); and the jobs' own URLs
// (#/jobs/ID: the page open on the job's detail; the back button closes it).
// Charts drawn with uPlot (vendored: uPlot.iife.min.js, uPlot.LICENSE.txt).
// Uses app.js's helpers (api, el, $, $$, when, relative, selectJob,
// closeDetail); app.js calls startStats() once logged in.
'use strict';

const stats = {
  range: 'minutes', data: null, charts: {}, sort: 'runs', descending: true,
  busy: false, timer: null,
};
const COLORS = ['#2563eb', '#c0392b', '#15803d', '#b45309', '#7c3aed', '#0e7490',
                '#be185d', '#4b5563'];
// For the tests and the screenshot script.
window.remotetaskCharts = stats.charts;

// -- formatting ------------------------------------------------------------------

function seconds(s) {
  if (s === null || s === undefined) return '—';
  if (s < 0.01) return (s * 1000).toFixed(1) + ' ms';
  if (s < 1) return Math.round(s * 1000) + ' ms';
  if (s < 10) return s.toFixed(2) + ' s';
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

function percent(rate) {
  return rate === null || rate === undefined ? '—' : (rate * 100).toFixed(rate < 0.1 ? 1 : 0) + '%';
}

function jobLink(id, text) {
  return el('a', {href: '#/jobs/' + id, class: 'job-link', 'data-job': id}, text || '#' + id);
}

// -- charts ----------------------------------------------------------------------

function chartWidth(box) {
  return Math.max(200, Math.floor(box.getBoundingClientRect().width));
}

function timeAxis() {
  return {stroke: '#6b7280', grid: {stroke: '#eef0f3'}, ticks: {stroke: '#e3e6ea'}};
}

function valueAxis(format) {
  const axis = {stroke: '#6b7280', grid: {stroke: '#eef0f3'}, ticks: {stroke: '#e3e6ea'}, size: 56};
  if (format) axis.values = (u, splits) => splits.map(format);
  return axis;
}

// Make a chart, or give it new data (and new series when they changed).
function draw(name, series, data, format) {
  const box = $('#chart-' + name);
  const key = series.map((s) => s.label).join('|');
  let chart = stats.charts[name];
  if (chart && chart._key !== key) { chart.destroy(); chart = null; }
  if (!chart) {
    const options = {
      width: chartWidth(box), height: 180,
      series: [{}, ...series],
      axes: [timeAxis(), valueAxis(format)],
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(max || 0, format ? 0.001 : 1)]}},
      legend: {live: true},
      cursor: {drag: {x: false, y: false}},
    };
    chart = new uPlot(options, data, box);
    chart._key = key;
    stats.charts[name] = chart;
  } else {
    chart.setData(data);
  }
}

function renderCharts(data) {
  const s = data[stats.range];
  const unit = stats.range === 'minutes' ? 'minute' : 'hour';
  $('#throughput-caption').textContent = 'Runs per ' + unit;
  draw('throughput', [
    {label: 'completed', stroke: COLORS[2], fill: 'rgba(21,128,61,.08)', width: 2},
    {label: 'failed', stroke: COLORS[1], width: 2},
    {label: 'retried', stroke: COLORS[3], width: 1, dash: [4, 3]},
  ], [s.time, s.completed, s.failed, s.retried]);
  draw('waiting', [{label: 'waiting', stroke: COLORS[0], width: 2, spanGaps: true,
                    fill: 'rgba(37,99,235,.08)'}],
       [s.time, s.waiting]);
  const tasks = Object.keys(s.runtime).sort();
  const series = [];
  const columns = [s.time];
  tasks.forEach((task, i) => {
    const color = COLORS[i % COLORS.length];
    series.push({label: task + ' p50', stroke: color, width: 2, spanGaps: true,
                 value: (u, v) => seconds(v)});
    series.push({label: task + ' p95', stroke: color, width: 1, dash: [5, 4], spanGaps: true,
                 value: (u, v) => seconds(v)});
    columns.push(s.runtime[task].p50, s.runtime[task].p95);
  });
  if (!tasks.length) {
    series.push({label: 'no runs', stroke: '#c9ced6'});
    columns.push(s.time.map(() => null));
  }
  draw('runtime', series, columns, seconds);
}

function resizeCharts() {
  for (const [name, chart] of Object.entries(stats.charts))
    chart.setSize({width: chartWidth($('#chart-' + name)), height: 180});
}

// -- the per-task table -------------------------------------------------------

const COLUMNS = [
  ['task', 'Task'], ['runs', 'Runs'], ['failed', 'Failures'], ['failure_rate', 'Failure rate'],
  ['retried', 'Retried'], ['p50', 'p50'], ['p95', 'p95'], ['last_failure', 'Last failure'],
  ['waiting', 'Waiting'],
];

function sortValue(row, key) {
  if (key === 'last_failure') return row.last_failure ? row.last_failure.at : -1;
  const v = row[key];
  return v === null || v === undefined ? -1 : v;
}

function renderTable(data) {
  const head = $('#task-stats thead tr');
  head.replaceChildren(...COLUMNS.map(([key, label]) => el('th', {
    class: 'sortable' + (key === 'task' ? '' : ' num'), 'data-key': key,
    'aria-sort': stats.sort === key ? (stats.descending ? 'descending' : 'ascending') : null,
    onclick: () => {
      stats.descending = stats.sort === key ? !stats.descending : key !== 'task';
      stats.sort = key;
      renderTable(stats.data);
    }}, label + (stats.sort === key ? (stats.descending ? ' ▼' : ' ▲') : ''))));
  const rows = data.tasks.slice().sort((a, b) => {
    const x = sortValue(a, stats.sort);
    const y = sortValue(b, stats.sort);
    const order = x < y ? -1 : x > y ? 1 : a.task < b.task ? -1 : a.task > b.task ? 1 : 0;
    return stats.descending ? -order : order;
  });
  const body = $('#task-stats tbody');
  body.replaceChildren(...rows.map((row) => el('tr', {'data-task': row.task},
    el('td', {text: row.task}),
    el('td', {class: 'num', 'data-col': 'runs', text: row.runs}),
    el('td', {class: 'num' + (row.failed ? ' error' : ''), 'data-col': 'failed', text: row.failed}),
    el('td', {class: 'num', 'data-col': 'failure_rate', text: percent(row.failure_rate)}),
    el('td', {class: 'num', 'data-col': 'retried', text: row.retried}),
    el('td', {class: 'num', 'data-col': 'p50', text: seconds(row.p50)}),
    el('td', {class: 'num', 'data-col': 'p95', text: seconds(row.p95)}),
    el('td', {'data-col': 'last_failure', class: 'last-failure',
              title: row.last_failure ? row.last_failure.error : ''},
       row.last_failure ? jobLink(row.last_failure.job) : '',
       row.last_failure ? ' ' + relative(row.last_failure.at) : ''),
    el('td', {class: 'num', 'data-col': 'waiting', text: row.waiting}))));
  if (!rows.length)
    body.append(el('tr', {}, el('td', {colspan: COLUMNS.length, class: 'empty',
                                       text: 'No task has run yet.'})));
}

// -- refreshing --------------------------------------------------------------------

async function refreshStats() {
  if (stats.busy) return;
  stats.busy = true;
  try {
    stats.data = await api('GET', 'api/stats');
    renderCharts(stats.data);
    renderTable(stats.data);
  } catch (e) {
    // app.js's refresh shows the page offline; try again at the next tick
  } finally {
    stats.busy = false;
  }
}

function setRange(range) {
  stats.range = range;
  $$('#stats-range button').forEach((b) => b.classList.toggle('active', b.dataset.range === range));
  if (stats.data) renderCharts(stats.data);
}

// -- the jobs' own URLs ------------------------------------------------------------

function hashJob() {
  const m = /^#\/jobs\/(\d+)$/.exec(window.location.hash);
  return m ? Number(m[1]) : null;
}

// selectJob (app.js) calls it: the URL of the open job, a new history entry.
function linkJob(id) {
  if (hashJob() !== id) window.location.hash = '#/jobs/' + id;
}

// closeDetail (app.js) calls it: the page's URL without the job.
function unlinkJob() {
  if (hashJob() !== null)
    history.replaceState(null, '', window.location.pathname + window.location.search);
}

function followHash() {
  const id = hashJob();
  if (id !== null) { if (state.selected !== id) selectJob(id); }
  else if (state.selected !== null) closeDetail();
}

function startStats() {
  $$('#stats-range button').forEach((b) => b.addEventListener('click', () => setRange(b.dataset.range)));
  // Links to jobs anywhere on the page go through the URL (and history).
  document.addEventListener('click', (e) => {
    const link = e.target.closest && e.target.closest('a.job-link');
    if (!link) return;
    e.preventDefault();
    linkJob(Number(link.dataset.job));
  });
  window.addEventListener('hashchange', followHash);
  window.addEventListener('resize', () => {
    clearTimeout(stats.timer);
    stats.timer = setTimeout(resizeCharts, 100);
  });
  followHash();
  refreshStats();
  setInterval(refreshStats, 2000);
}
