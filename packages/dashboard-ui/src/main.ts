import { createClient, type Client } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-web';
import { control } from '@kiln/api';
import { BuildState, type Step } from './build-state.js';
import { renderDag } from './dag-view.js';
import { h } from './dom.js';
import { formatBytes, formatClock, formatDuration, timestampMs } from './timestamps.js';

/**
 * The dashboard page: workers, builds (polled from the history), and one
 * build in detail, fed by the solver's Status stream while it runs and by
 * HistoryLogs once it ended. Everything comes from ControlService's read
 * methods over Connect (JSON) on the dashboard's own origin; the cookie
 * the first visit set authenticates each call.
 */
type Record = control.BuildHistoryRecord;

const client: Client<typeof control.ControlService> = createClient(control.ControlService, createConnectTransport({ baseUrl: location.origin }));
const $ = (id: string) => document.getElementById(id)!;

let history: Record[] = [];
/** Follow the newest build until the user picks one (or the URL names one). */
let followNewest = !location.hash.startsWith('#build=');
let detail: Detail | undefined;

interface Detail {
  ref: string;
  record?: Record;
  misses: Map<string, string>;
  state: BuildState;
  abort: AbortController;
  live: boolean;
  renderedLogs: number;
  el: { head: HTMLElement; error: HTMLElement; dag: HTMLElement; steps: HTMLElement; logs: HTMLElement };
}

function setConnection(ok: boolean, message = ''): void {
  const el = $('conn');
  el.textContent = ok ? '' : `⚠ ${message}`;
  el.className = ok ? 'muted' : 'warn';
}

async function refreshInfo(): Promise<void> {
  const info = await client.info({});
  $('daemon-info').textContent = `${info.version}${info.revision ? ` (${info.revision.slice(0, 7)})` : ''} · tiers: ${info.tiers.join(', ')}`;
}

async function refreshWorkers(): Promise<void> {
  const res = await client.listWorkers({});
  const box = $('workers');
  box.replaceChildren(
    ...res.record.map((w) =>
      h(
        'div',
        { class: 'worker', 'data-worker': w.id },
        h('div', { class: 'worker-id' }, w.id),
        h('div', {}, h('span', { class: 'muted' }, 'platforms '), w.platforms.map((p) => [p.os, p.architecture, p.variant].filter(Boolean).join('/')).join(', ')),
        h('div', {}, h('span', { class: 'muted' }, 'load '), `${w.runningBuilds} running build${w.runningBuilds === 1 ? '' : 's'}`),
        h('div', { class: 'labels' }, ...Object.entries(w.labels).sort().map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`))),
      ),
    ),
  );
  if (res.record.length === 0) box.replaceChildren(h('p', { class: 'muted' }, 'no workers'));
}

async function refreshDisk(): Promise<void> {
  const res = await client.diskUsage({});
  let cache = 0n;
  let content = 0n;
  let inUse = 0n;
  for (const r of res.record) {
    if (r.recordType === 'content') content += r.size;
    else if (!r.shared) cache += r.size;
    if (r.inUse) inUse += r.size;
  }
  $('disk').textContent = `disk: build cache ${formatBytes(Number(cache))}, content store ${formatBytes(Number(content))} (${formatBytes(Number(inUse))} in use)`;
}

function buildTitle(r: Record): string {
  const a = r.frontendAttrs;
  const parts = [a['target'] ? `target ${a['target']}` : '', a['filename'] && a['filename'] !== 'Dockerfile' ? a['filename'] : '', a['platform'] ?? ''].filter(Boolean);
  return parts.length ? parts.join(' · ') : r.frontend || 'definition';
}

function duration(r: Record): string {
  const start = timestampMs(r.createdAt);
  if (start === undefined) return '';
  return formatDuration((timestampMs(r.completedAt) ?? Date.now()) - start);
}

function cacheRatio(r: Record): string {
  if (r.numTotalSteps === 0) return '–';
  return `${r.numCachedSteps}/${r.numTotalSteps} · ${Math.round((100 * r.numCachedSteps) / r.numTotalSteps)}%`;
}

/** Builds' refs and states last shown: a change (a build started or ended) refreshes the disk use too. */
let historyKey = '';

async function refreshHistory(): Promise<void> {
  history = (await client.listHistory({ limit: 50 })).records;
  const key = history.map((r) => `${r.ref}:${r.status}`).join(',');
  // Workers' load moves while builds run (a build picks its worker after it is recorded): follow it at the history's pace then.
  if ((historyKey && key !== historyKey) || history.some((r) => r.status === 'running')) void refreshWorkers().catch(() => undefined);
  if (historyKey && key !== historyKey) void refreshDisk().catch(() => undefined);
  historyKey = key;
  const rows = history.map((r) => {
    const row = h(
      'tr',
      { class: `build status-${r.status}${detail?.ref === r.ref ? ' selected' : ''}`, 'data-ref': r.ref, title: [r.status, r.workers.length ? `on ${r.workers.join(', ')}` : '', r.client ? `from ${r.client}` : ''].filter(Boolean).join(' · ') },
      h('td', {}, h('span', { class: `dot status-${r.status}`, title: r.status })),
      h('td', { class: 'mono' }, r.ref.slice(0, 10)),
      h('td', {}, buildTitle(r)),
      h('td', { class: 'muted' }, formatClock(timestampMs(r.createdAt) ?? 0)),
      h('td', {}, duration(r)),
      h('td', {}, cacheRatio(r)),
    );
    row.addEventListener('click', () => {
      followNewest = false;
      location.hash = `#build=${r.ref}`;
    });
    return row;
  });
  $('builds').querySelector('tbody')!.replaceChildren(...rows);
  if (history.length === 0) $('builds').querySelector('tbody')!.replaceChildren(h('tr', {}, h('td', { class: 'muted' }, 'no builds yet')));
  const newest = history[0];
  if (followNewest && newest && detail?.ref !== newest.ref) select(newest.ref);
  // A build that ended while shown: its final record (status, error) and explanations.
  const current = detail && history.find((r) => r.ref === detail!.ref);
  if (detail && current && detail.record?.status === 'running' && current.status !== 'running' && !detail.live) void inspect(detail);
}

function select(ref: string): void {
  detail?.abort.abort();
  const box = $('detail');
  const el = { head: h('div', { class: 'head' }), error: h('div'), dag: h('div', { class: 'dag-box' }), steps: h('div'), logs: h('pre', { class: 'logs', id: 'logs' }) };
  box.replaceChildren(el.head, el.error, h('h3', {}, 'Steps'), el.dag, el.steps, h('h3', {}, 'Logs'), el.logs);
  const d: Detail = { ref, misses: new Map(), state: new BuildState(), abort: new AbortController(), live: false, renderedLogs: 0, el };
  detail = d;
  void follow(d).catch((err: unknown) => {
    if (!d.abort.signal.aborted) setConnection(false, `build ${ref.slice(0, 10)}: ${(err as Error).message}`);
  });
  for (const row of document.querySelectorAll<HTMLElement>('tr.build')) row.classList.toggle('selected', row.dataset['ref'] === ref);
}

async function inspect(d: Detail): Promise<void> {
  const res = await client.inspectHistory({ ref: d.ref }, { signal: d.abort.signal });
  d.record = res.record;
  d.misses = new Map(res.cacheMisses.map((m) => [m.vertex, m.reason]));
  render(d);
}

/** Progress of the build: live from Status while it runs, replayed from the history once it ended. */
async function follow(d: Detail): Promise<void> {
  await inspect(d);
  if (d.record?.status === 'running') {
    d.live = true;
    try {
      for await (const u of client.status({ ref: d.ref }, { signal: d.abort.signal })) {
        d.state.apply(u);
        scheduleRender(d);
      }
    } finally {
      d.live = false;
    }
    if (d.abort.signal.aborted) return;
    await inspect(d);
    // Status ends with the build; fill in anything it did not send (e.g. the history's replay is complete).
    if (d.state.steps.size > 0) return;
  }
  for await (const u of client.historyLogs({ ref: d.ref }, { signal: d.abort.signal })) {
    if (u.status) d.state.apply(u.status);
  }
  render(d);
}

let frame = 0;
function scheduleRender(d: Detail): void {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    if (detail === d) render(d);
  });
}

function instruction(step: Step): string {
  // "[stage-1 2/4] RUN make" -> "RUN make"
  return step.name.replace(/^\[[^\]]*\]\s*/, '');
}

function render(d: Detail): void {
  if (detail !== d) return;
  const r = d.record;
  const now = Date.now();
  const steps = d.state.ordered();
  const ratio = d.state.hitRatio();
  d.el.head.replaceChildren(
    h('h2', {}, h('span', { class: `dot status-${r?.status ?? 'running'}` }), ` Build ${d.ref.slice(0, 12)}`, h('span', { class: 'muted' }, ` ${r ? buildTitle(r) : ''}`)),
    h(
      'div',
      { class: 'stats' },
      h('span', { id: 'build-status' }, r?.status ?? 'loading'),
      r ? h('span', {}, `started ${formatClock(timestampMs(r.createdAt) ?? 0)}`) : null,
      r ? h('span', {}, `duration ${duration(r)}`) : null,
      h('span', {}, `cache hits ${ratio.cached}/${ratio.finished}${ratio.finished ? ` (${Math.round((100 * ratio.cached) / ratio.finished)}%)` : ''}`),
      r?.workers.length ? h('span', { id: 'build-workers' }, `on ${r.workers.join(', ')}`) : null,
      r?.client ? h('span', { id: 'build-client' }, `from ${r.client}`) : null,
      r?.frontend ? h('span', {}, `frontend ${r.frontend}`) : null,
      r?.exporters.length ? h('span', {}, `exporters ${r.exporters.join(', ')}`) : null,
    ),
  );
  const failed = steps.find((st) => st.state === 'error');
  const errorText = r?.error || failed?.error || '';
  d.el.error.replaceChildren(
    ...(errorText
      ? [
          h(
            'div',
            { class: 'error-box', id: 'build-error' },
            h('strong', {}, 'Error'),
            h('pre', {}, errorText),
            failed ? h('div', { class: 'muted' }, `${r?.frontendAttrs['filename'] || 'Dockerfile'}, step #${failed.number}:`) : null,
            failed ? h('pre', { class: 'excerpt' }, instruction(failed)) : null,
          ),
        ]
      : []),
  );
  d.el.dag.replaceChildren(steps.length ? renderDag(steps, now) : h('p', { class: 'muted' }, 'waiting for steps…'));
  d.el.steps.replaceChildren(
    h(
      'table',
      { class: 'steps' },
      h('tbody', {}, ...steps.map((st) => {
        const miss = st.cacheMiss || d.misses.get(st.digest) || '';
        return h(
          'tr',
          { class: `step state-${st.state}`, 'data-digest': st.digest },
          h('td', { class: 'mono' }, `#${st.number}`),
          h('td', {}, st.name),
          h('td', {}, st.state === 'cached' ? h('span', { class: 'badge cached' }, 'CACHED') : st.state),
          h('td', {}, st.startedMs !== undefined && st.state !== 'cached' ? formatDuration((st.completedMs ?? now) - st.startedMs) : ''),
          h('td', { class: 'miss' }, miss ? `cache miss: ${miss}` : ''),
        );
      })),
    ),
  );
  renderLogs(d);
}

/** Appends new log lines; keeps the view at the bottom if it was there. */
function renderLogs(d: Detail): void {
  const pre = d.el.logs;
  const logs = d.state.logs;
  if (d.renderedLogs > logs.length) {
    pre.replaceChildren();
    d.renderedLogs = 0;
  }
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const frag = document.createDocumentFragment();
  for (const l of logs.slice(d.renderedLogs)) frag.append(h('div', { class: `log-line${l.stream === 2 ? ' stderr' : ''}` }, h('span', { class: 'muted' }, `#${l.step} `), l.text));
  pre.append(frag);
  d.renderedLogs = logs.length;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

/** Runs `fn` now and every `ms`, showing (and clearing) connection problems. */
function every(ms: number, fn: () => Promise<void>): void {
  const tick = async () => {
    try {
      await fn();
      setConnection(true);
    } catch (err) {
      setConnection(false, (err as Error).message);
    }
    setTimeout(tick, ms);
  };
  void tick();
}

window.addEventListener('hashchange', () => {
  const m = /^#build=([\w-]+)$/.exec(location.hash);
  if (m && detail?.ref !== m[1]) {
    followNewest = false;
    select(m[1]!);
  }
});
const initial = /^#build=([\w-]+)$/.exec(location.hash);
if (initial) select(initial[1]!);
every(2000, refreshHistory);
every(5000, refreshWorkers);
every(30_000, refreshDisk);
void refreshInfo().catch(() => undefined);
// Running steps' clocks move on their own.
setInterval(() => {
  if (detail?.live) scheduleRender(detail);
}, 1000);
