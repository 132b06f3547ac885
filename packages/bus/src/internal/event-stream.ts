import { InvalidArgumentError } from '@kiln/common';
import { busDefaults, type EventStreamLimits } from '../bus.js';
import { subjectMatches, validateName, validateSubject } from '../subject.js';

/** Checks an event stream's name and subjects (as `EventBus.eventStream` documents). */
export function validateEventStream(name: string, subjects: readonly string[]): void {
  validateName(name, 'name');
  if (!Array.isArray(subjects) || subjects.length === 0) throw new InvalidArgumentError(`event stream ${name} needs at least one subject`, 'subjects');
  for (const s of subjects) validateSubject(s, true);
}

/** Throws InvalidArgumentError (field `subject`) unless `subject` is one the stream stores. */
export function checkStreamSubject(name: string, subjects: readonly string[], subject: string): void {
  validateSubject(subject, false);
  if (!subjects.some((p) => subjectMatches(p, subject))) {
    throw new InvalidArgumentError(`subject ${subject} is not stored by event stream ${name} (${subjects.join(', ')})`, 'subject');
  }
}

/** Limits with defaults filled in; InvalidArgumentError naming the field on a bad value. */
export function compileStreamLimits(limits: EventStreamLimits = {}): Required<EventStreamLimits> {
  const maxAgeMs = limits.maxAgeMs ?? busDefaults.eventStreamMaxAgeMs;
  const maxBytes = limits.maxBytes ?? busDefaults.eventStreamMaxBytes;
  if (!Number.isSafeInteger(maxAgeMs) || maxAgeMs < 1000) throw new InvalidArgumentError(`invalid maxAgeMs ${maxAgeMs}: at least 1000`, 'maxAgeMs');
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1024 * 1024) throw new InvalidArgumentError(`invalid maxBytes ${maxBytes}: at least 1 MiB`, 'maxBytes');
  return { maxAgeMs, maxBytes };
}
