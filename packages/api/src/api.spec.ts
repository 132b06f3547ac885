import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { content, control, events, exporter, frontend, llb, session, worker } from './index.js';

describe('@kiln/api (generated)', () => {
  it('exposes every tier service under its proto package', () => {
    const services = [control.ControlService, session.SessionService, frontend.FrontendService, worker.WorkerService, content.ContentService, exporter.ExporterService];
    expect(services.map((s) => s.typeName)).toEqual([
      'kiln.control.v1.ControlService',
      'kiln.session.v1.SessionService',
      'kiln.frontend.v1.FrontendService',
      'kiln.worker.v1.WorkerService',
      'kiln.content.v1.ContentService',
      'kiln.exporter.v1.ExporterService',
    ]);
    expect(control.ControlService.methods.map((m) => m.name)).toEqual(['Solve', 'Status', 'ListWorkers', 'DiskUsage', 'Prune', 'Info', 'ListHistory', 'InspectHistory', 'HistoryLogs', 'DeleteHistory', 'ExportHistory', 'ImportHistory', 'OpenHistory']);
  });

  it('round-trips an LLB op and a build event through the binary encoding', () => {
    const op = create(llb.OpSchema, { op: { case: 'source', value: { identifier: 'local://context', attrs: { a: '1' } } } });
    expect(fromBinary(llb.OpSchema, toBinary(llb.OpSchema, op))).toEqual(op);
    const ev = create(events.BuildEventSchema, { buildId: 'b', event: { case: 'done', value: { error: 'x', errorCode: 'vertex' } } });
    expect(fromBinary(events.BuildEventSchema, toBinary(events.BuildEventSchema, ev)).event).toMatchObject({ case: 'done', value: { error: 'x' } });
  });
});
