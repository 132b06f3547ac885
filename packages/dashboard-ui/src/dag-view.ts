import type { Step } from './build-state.js';
import { layoutDag } from './dag-layout.js';
import { s } from './dom.js';
import { formatDuration } from './timestamps.js';

const NODE_W = 220;
const NODE_H = 44;
const GAP_X = 56;
const GAP_Y = 14;
const PAD = 10;

/** The longest step name shown in a node; the full name is in its tooltip and the step table. */
function shortName(name: string): string {
  return name.length > 30 ? `${name.slice(0, 29)}…` : name;
}

/**
 * The build's steps as an SVG graph, columns by depth. Each node is a
 * `g.dag-node` with `data-digest` and `data-state` (pending, running,
 * done, cached, error): the colour says the state; the second line the
 * time taken or CACHED.
 */
export function renderDag(steps: readonly Step[], nowMs: number): SVGElement {
  const layout = layoutDag(steps.map((st) => ({ id: st.digest, inputs: st.inputs })));
  const pos = new Map(layout.nodes.map((n) => [n.id, { x: PAD + n.depth * (NODE_W + GAP_X), y: PAD + n.row * (NODE_H + GAP_Y) }]));
  const width = PAD * 2 + Math.max(1, layout.columns) * (NODE_W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.max(1, layout.rows) * (NODE_H + GAP_Y) - GAP_Y;
  const svg = s('svg', { class: 'dag', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'build steps' });
  for (const e of layout.edges) {
    const a = pos.get(e.from)!;
    const b = pos.get(e.to)!;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const mx = (x1 + x2) / 2;
    svg.append(s('path', { class: 'dag-edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
  }
  for (const st of steps) {
    const p = pos.get(st.digest)!;
    const detail =
      st.state === 'cached' ? 'CACHED'
      : st.state === 'error' ? `ERROR${st.startedMs !== undefined ? ` after ${formatDuration((st.completedMs ?? nowMs) - st.startedMs)}` : ''}`
      : st.state === 'pending' ? 'waiting'
      : st.startedMs !== undefined ? `${formatDuration((st.completedMs ?? nowMs) - st.startedMs)}${st.state === 'running' ? ' …' : ''}`
      : '';
    svg.append(
      s(
        'g',
        { class: `dag-node state-${st.state}`, 'data-digest': st.digest, 'data-state': st.state, transform: `translate(${p.x},${p.y})` },
        s('title', {}, `#${st.number} ${st.name}${st.cacheMiss ? `\ncache miss: ${st.cacheMiss}` : ''}`),
        s('rect', { width: NODE_W, height: NODE_H, rx: 6 }),
        s('text', { x: 10, y: 18, class: 'dag-name' }, `#${st.number} ${shortName(st.name)}`),
        s('text', { x: 10, y: 35, class: 'dag-detail' }, detail),
      ),
    );
  }
  return svg;
}
