/** A step as the DAG view needs it: its id and the ids of the steps it reads. */
export interface DagNode {
  id: string;
  inputs: readonly string[];
}

export interface PlacedNode {
  id: string;
  /** Column: the longest chain of inputs below it (sources are 0). */
  depth: number;
  /** Row within its column, in the order the steps first appeared. */
  row: number;
}

export interface DagLayout {
  nodes: PlacedNode[];
  /** Edges from input to consumer, both present in the graph. */
  edges: { from: string; to: string }[];
  columns: number;
  rows: number;
}

/**
 * Lays a build's steps out by depth: each step one column right of its
 * deepest input, rows in arrival order. Inputs the graph does not hold
 * (not yet reported) are ignored; a cycle (never in LLB) cannot hang it,
 * since depth is computed iteratively with a bound.
 */
export function layoutDag(nodes: readonly DagNode[]): DagLayout {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = new Map<string, number>();
  const depthOf = (start: string): number => {
    // Iterative post-order walk: chains of thousands of steps must not overflow the stack.
    const stack: { id: string; seen: boolean }[] = [{ id: start, seen: false }];
    const onPath = new Set<string>();
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      if (depth.has(top.id)) {
        stack.pop();
        continue;
      }
      const inputs = (byId.get(top.id)?.inputs ?? []).filter((i) => byId.has(i) && !onPath.has(i));
      if (!top.seen) {
        top.seen = true;
        onPath.add(top.id);
        for (const i of inputs) if (!depth.has(i)) stack.push({ id: i, seen: false });
        continue;
      }
      stack.pop();
      onPath.delete(top.id);
      depth.set(top.id, inputs.reduce((d, i) => Math.max(d, (depth.get(i) ?? 0) + 1), 0));
    }
    return depth.get(start)!;
  };
  const rowsPerColumn: number[] = [];
  const placed: PlacedNode[] = nodes.map((n) => {
    const d = depthOf(n.id);
    const row = rowsPerColumn[d] ?? 0;
    rowsPerColumn[d] = row + 1;
    return { id: n.id, depth: d, row };
  });
  const edges = nodes.flatMap((n) => n.inputs.filter((i) => byId.has(i) && i !== n.id).map((i) => ({ from: i, to: n.id })));
  return { nodes: placed, edges, columns: rowsPerColumn.length, rows: Math.max(0, ...rowsPerColumn) };
}
