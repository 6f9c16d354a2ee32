"""The third-party `fluxer.py` client (from PyPI) against the Fluxer emulator, unchanged.

Usage: python sdk_fluxer.py API_URL SESSION_TOKEN BOT_TOKEN
Signs in as the user, lists guilds and channels, posts a message with a file whose name Fluxer
normalises, pages and fetches it, downloads the attachment, deletes it, then signs in as the
bot. Prints "all checks passed" at the end.
"""

import asyncio
import sys
import urllib.request

from fluxer.http import HTTPClient


async def main(api_url: str, token: str, bot_token: str) -> None:
    async with HTTPClient(token, is_bot=False, api_url=api_url) as client:
        me = await client.get_current_user()
        guilds = await client.get_current_user_guilds()
        channels = await client.get_guild_channels(guilds[0]["id"])
        names = sorted(c["name"] for c in channels)
        assert names == ["files", "general"], names
        channel = channels[0]["id"]
        sent = await client.send_message(
            channel,
            content="hello from fluxer.py",
            files=[{"filename": "my report (1).txt", "data": b"hello sdk"}],
        )
        listed = await client.get_messages(channel, limit=10)
        assert listed[0]["id"] == sent["id"], listed
        one = await client.get_message(channel, sent["id"])
        attachment = one["attachments"][0]
        assert attachment["filename"] == "my_report_1.txt", attachment["filename"]
        body = urllib.request.urlopen(attachment["url"]).read()
        assert body == b"hello sdk", body
        await client.delete_message(channel, sent["id"])
        remaining = await client.get_messages(channel, limit=10)
        assert all(m["id"] != sent["id"] for m in remaining), remaining
        print("user", me["username"], "channels", names)
    async with HTTPClient(bot_token, is_bot=True, api_url=api_url) as bot:
        assert (await bot.get_current_user())["bot"] is True
    print("all checks passed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
