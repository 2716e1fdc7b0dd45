"""``llmbus image "…" [--tier] [--out file.png]``: one image ask to the images actor.

The tier decides (``[tiers.<name>.quotas]``, ``[tiers.<name>.images]``): a generated image within
its quota, else a placeholder, a ``budget_exceeded`` naming the quota, or a cheaper model. The PNG
goes to ``--out`` (several: ``name-1.png``, ``name-2.png``…); the summary goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from actors.cli.common import (ConfigOpt, JsonOpt, UrlOpt, err, exit_code, group, load_settings, on_fleet,
                               print_failure, print_json)
from bus import messages as m
from bus.errors import LlmError

app = group()


def _paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]


@app.command()
def image(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="what to draw")],
    tier: Annotated[Optional[str], typer.Option(help="the asking user's tier (its quota and policy)")] = None,
    user: Annotated[Optional[str], typer.Option(help="who asks")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="write the PNG here")] = None,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT")] = "1024x1024",
    count: Annotated[int, typer.Option(min=1, max=4, help="how many images")] = 1,
    provider: Annotated[Optional[str], typer.Option(help="this provider instead of the images order")] = None,
    model: Annotated[Optional[str], typer.Option(help="a model hint")] = None,
    style: Annotated[Optional[list[str]], typer.Option(help="a style hint KEY=VALUE (repeat)")] = None,
    budget_ms: Annotated[int, typer.Option(min=1, help="time for the whole ask")] = 120_000,
    json_out: JsonOpt = False,
    nats_url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Generate an image as the tier says; write it to --out."""
    hints = {}
    for item in style or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--style takes KEY=VALUE (got {item!r})")
        hints[key] = value
    settings = load_settings(ctx, config, nats_url)

    async def work(client):
        try:
            result = await client.image(prompt, size=size, count=count, style=hints, tier=tier, user=user,
                                        provider=provider, model=model, budget_ms=budget_ms)
        except LlmError as exc:
            return exc.failure
        return result, (await client.image_bytes(result) if out_file is not None else [])

    reply = on_fleet(settings, work, json_out=json_out)
    if isinstance(reply, m.Failure):
        if json_out:
            print_json(reply)
        else:
            print_failure(reply)
        raise typer.Exit(exit_code(reply))
    result, blobs = reply
    written = []
    for path, data in zip(_paths(out_file, len(blobs)) if out_file else [], blobs):
        path.write_bytes(data)
        written.append(str(path))
    if json_out:
        print_json(m.ImageResult(**{**{f: getattr(result, f) for f in result.__struct_fields__},
                                    "images": [m.Picture(media_type=p.media_type, url=p.url, ref=p.ref)
                                               for p in result.images],
                                    "metadata": {**result.metadata, "written": written}}))
        return
    left = result.metadata.get("quota_left")
    if result.placeholder:  # the tier's policy over its quota (a quota of 0: placeholders only)
        what, quota = "a placeholder", ""
        over = f" (over quota: {result.metadata['over_quota']})" if result.metadata.get("over_quota") else ""
    else:
        what = f"{result.provider}/{result.model}"
        quota = f"; quota {result.quota}: {left} left" if result.quota else ""
        over = f"; over quota: {result.metadata['over_quota']}" if result.metadata.get("over_quota") else ""
    where = ", ".join(written) if written else "(not written: give --out FILE.png)"
    err.print(f"{len(result.images)} image(s) {result.size} from {what} in {result.latency_ms:.0f} ms{quota}{over} -> {where}",
              markup=False)
