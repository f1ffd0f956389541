"""Invalidation: how cached audio stops being served, everywhere it is held.

The concept map, one place per job:

- `filter.py`: what a purge covers. `PurgeFilter` (key, voice, tag, engine, model version,
  age, expiry, or all), validated from operator input; `Unreachable`, the sweeper's scope.
- `purge.py`: the purge itself. `purge(cache, filter)` removes the covered entries from every
  tier (by key, through a tier's voice/tag index, or by a scan that yields to the event loop)
  and reports entries and bytes per tier. `DELETE /admin/cache`, `voicecache purge` and voice
  erasure (`voices/registry.erase_cached_audio`, a purge with a voice filter) all call it.
- `sweeper.py`: the background sweep that removes unreachable audio (old model versions,
  entries past their grace period), one process per shared store and interval (`SweepLease`).
- `feed.py`: purges announced to every other process (`PurgeNotice`, `MultiFeed`, the host's
  `FileFeed`) and applied there by a `PurgeFollower`. The Redis stream that carries notices
  across replicas is in `cluster/purge_feed.py`, with the other things replicas share through
  Redis.
- `maintenance.py`: a server process's background work, the sweeper and the follower.
- The fence, in `cache/tiers/tiered.py`: a purge announces itself to the `TieredCache`
  (`begin_purge` / `end_purge`, each bumping `generation`). Every read and write remembers the
  generation it started at, and an entry covered by a purge that ran at any moment since is
  treated as absent when read and is not written (or is deleted again right after a write
  that raced the purge). So from the moment a purge begins its entries are not served, and no
  promotion, sliding touch or engine fill that raced it can store them again. The gateway's
  coalescing id carries the generation too (`cache/lookup.py`), so a request arriving after a
  purge never joins work begun before it.
"""
