import { type Check, expectThat, skip } from './check.ts'
import {
  judgeHostileOperation,
  judgeWrongBlob,
  nothingKept,
  reasonEvidence,
  show,
  type Verdict,
  verdict,
} from './destination-checks.ts'
import type { DestinationTarget } from './destination-target.ts'
import type { HostileDraftBehaviour, HostileDraftSource } from './hostile-draft-source.ts'

/** A receiving PDS under test, driven as for the v1 checks, pulling from a hostile draft source. */
export type DraftDestinationTarget = Omit<DestinationTarget, 'hostile'> & { hostile: HostileDraftSource }

const control = new WeakMap<DraftDestinationTarget, Promise<Verdict>>()

async function runTransfer(t: DraftDestinationTarget, behaviour: HostileDraftBehaviour) {
  const account = await t.hostile.createAccount(behaviour)
  const transferId = await t.start({ did: account.did, sourceUrl: t.hostile.url, token: account.token })
  const result = await verdict(t, transferId)
  return { account, transferId, result }
}

function controlTransfer(t: DraftDestinationTarget): Promise<Verdict> {
  let run = control.get(t)
  if (!run) {
    run = runTransfer(t, 'honest').then((r) => r.result)
    control.set(t, run)
  }
  return run
}

async function needControl(t: DraftDestinationTarget): Promise<void> {
  const honest = await controlTransfer(t).catch(() => undefined)
  if (!honest?.accepted)
    skip('the honest draft control transfer was not imported, so a refusal proves nothing')
}

/** A hostile completeTransfer operation: not submitted, the transfer not completed, the account inactive. */
function hostileOperation(
  behaviour: Extract<HostileDraftBehaviour, `complete-${string}`>,
  title: string,
): Check<DraftDestinationTarget> {
  return {
    id: `destination.draft.complete.${behaviour.replace('complete-', '')}`,
    section: '0015 §2.2, D8',
    level: 'MUST',
    title,
    async run(t) {
      await needControl(t)
      if (!t.complete)
        skip('no way to enter the PLC code: give --complete-hook (see README, destination mode)')
      return judgeHostileOperation(
        t,
        await runTransfer(t, behaviour),
        'the destination never asked the draft source for a PLC code (requestPlcOperationSignature)',
      )
    },
  }
}

/**
 * Checks of a receiving PDS against a draft source: a control pull, then one hostile pull or
 * completion per check, each refused with nothing committed or submitted.
 */
export const draftDestinationChecks: readonly Check<DraftDestinationTarget>[] = [
  {
    id: 'destination.draft.accepts.honest',
    section: '0015 §2.1, §3',
    level: 'MUST',
    title:
      'control: a pull from an honest draft source (no well-known, JSON exportAccount, sync endpoints) is imported and waits for the PLC code',
    async run(t) {
      const result = await controlTransfer(t)
      expectThat(result.accepted, `the honest draft pull failed: ${show(result.status)}`)
      return show(result.status)
    },
  },
  {
    id: 'destination.draft.rejects.car-wrong-key',
    section: '0015 §3, repository spec',
    level: 'MUST',
    title: "a repo from getRepo whose commit is not signed by the DID's key is refused and not committed",
    async run(t) {
      await needControl(t)
      const { account, result } = await runTransfer(t, 'car-wrong-key')
      expectThat(!result.accepted, `the destination accepted the forged repo: ${show(result.status)}`)
      const reason = reasonEvidence(result.status, ['RepoInvalid'])
      return `${show(result.status)}; ${reason}; ${await nothingKept(t, account)}`
    },
  },
  {
    id: 'destination.draft.rejects.car-other-did',
    section: '0015 §3, repository spec',
    level: 'MUST',
    title:
      "a repo from getRepo signed with the DID's key whose commit names another DID is refused and not committed",
    async run(t) {
      await needControl(t)
      const { account, result } = await runTransfer(t, 'car-other-did')
      expectThat(!result.accepted, `the destination accepted another DID's repo: ${show(result.status)}`)
      const reason = reasonEvidence(result.status, ['RepoInvalid'])
      return `${show(result.status)}; ${reason}; ${await nothingKept(t, account)}`
    },
  },
  {
    id: 'destination.draft.rejects.private-state-invalid',
    section: '0015 §5',
    level: 'MUST',
    title:
      'exportAccount\'s privateState with a known field of the wrong type (emailConfirmed: "yes") is refused',
    async run(t) {
      await needControl(t)
      const { account, result } = await runTransfer(t, 'private-state-invalid')
      expectThat(!result.accepted, `the destination accepted the private state: ${show(result.status)}`)
      const reason = reasonEvidence(result.status, ['AccountStateInvalid'])
      return `${show(result.status)}; ${reason}; ${await nothingKept(t, account)}`
    },
  },
  {
    id: 'destination.draft.rejects.preferences-item-invalid',
    section: '0015 §7, §3',
    level: 'MUST',
    title:
      'with preferences negotiated, a getPreferences item its app.bsky lexicon refuses (adultContentPref enabled: "yes") is refused',
    async run(t) {
      await needControl(t)
      const { account, result } = await runTransfer(t, 'preferences-item-invalid')
      if (result.accepted && result.status.error === undefined) {
        // A destination that never asks for preferences has nothing to refuse.
        const asked = t.hostile.preferencesAsked(account.did)
        if (!asked)
          skip('the destination did not ask for the preferences capability, nor call getPreferences')
      }
      expectThat(!result.accepted, `the destination accepted the preferences: ${show(result.status)}`)
      const reason = reasonEvidence(result.status, ['PreferencesInvalid'])
      return `${show(result.status)}; ${reason}; ${await nothingKept(t, account)}`
    },
  },
  {
    id: 'destination.draft.rejects.getblob-wrong-bytes',
    section: '0015 §3, Addendum',
    level: 'MUST',
    title:
      'a blob from getBlob whose bytes do not hash to its CID is not stored under it (listed missing, or the pull fails)',
    async run(t) {
      await needControl(t)
      const { account, result } = await runTransfer(t, 'getblob-wrong-bytes')
      const judged = await judgeWrongBlob(t, account, result)
      if ('refused' in judged) return judged.refused
      return `${show(result.status)}; ${judged.cid} listed missing and not stored (${judged.stored.via})`
    },
  },
  hostileOperation(
    'complete-drops-user-key',
    "completeTransfer's operation (validly signed by the source) that drops the user's rotation key is not submitted; the account stays inactive",
  ),
  hostileOperation(
    'complete-changes-handle',
    "completeTransfer's operation that also changes the handle (alsoKnownAs) is not submitted; the account stays inactive",
  ),
]
