import type { Command } from 'commander';
import { type ActionFlags, withActionConfig, withApp } from './jobs.ts';

/** `celerity queues pause|resume|drain <name>`: the queue actions of the API, for operators. */
export function registerQueues(program: Command): void {
  const queues = program.command('queues').description("Pause, resume or drain one of the app's queues.");
  withActionConfig(queues.command('pause').description('Workers take no more jobs from the queue (running ones finish) until it is resumed; kept in Redis.').argument('<name>', 'the queue')).action(
    async (name: string, flags: ActionFlags) => {
      await withApp(flags, async (app) => {
        await app.pauseQueue(name);
        process.stdout.write(`${name}: paused\n`);
      });
    },
  );
  withActionConfig(queues.command('resume').description('Resume a paused queue.').argument('<name>', 'the queue')).action(async (name: string, flags: ActionFlags) => {
    await withApp(flags, async (app) => {
      await app.resumeQueue(name);
      process.stdout.write(`${name}: resumed\n`);
    });
  });
  withActionConfig(queues.command('drain').description('Remove every waiting and delayed job of the queue (they read cancelled); running jobs go on.').argument('<name>', 'the queue')).action(
    async (name: string, flags: ActionFlags) => {
      await withApp(flags, async (app) => {
        const { removed } = await app.drainQueue(name);
        process.stdout.write(`${name}: ${removed} job${removed === 1 ? '' : 's'} removed\n`);
      });
    },
  );
}
