"""Calls the simulator with two independent IM clients from PyPI.

Usage: third_party_clients.py BASE_URL SDKAPPID ADMIN SECRET_KEY
Prints one JSON object: each call's parsed answer.

Neither client can be pointed elsewhere as shipped, so each is bent the
least possible way (see the IM fact sheet, section 5):
- timsdk hard-codes its host: subclass HttpClient and override get_url.
  It reuses one `random`, sends no Content-Type and puts the UserSig raw.
- tencentcloud-sdk-python-im takes a base URL but has no unban method:
  post with its private _gen_query(), which percent-encodes `*` as %2A.
"""
import json
import sys

import requests
from tencentcloud_im.tcim_client import TCIMClient
from timsdk.http_client import HttpClient
from timsdk.tls_sig import TLSSig

base_url, sdkappid, admin, key = sys.argv[1:5]


class LoopbackClient(HttpClient):
    def get_url(self, path, random_id=123456789):
        return (
            f"{base_url}/v4/{path}?sdkappid={self._app_id}&identifier={self._identifier}"
            f"&usersig={self._signature}&random={random_id}&contenttype=json"
        )


results = {}
timsdk = LoopbackClient(sdkappid, admin, TLSSig.gen_sig(admin, sdkappid, key))
unban = "group_open_http_svc/unban_group_member"
results["timsdk_unban"] = timsdk.post(unban, data={"GroupId": "room", "Members_Account": ["alice"]})
# The same `random` again: the gateway must not treat it as a replay.
results["timsdk_unban_same_random"] = timsdk.post(unban, data={"GroupId": "room", "Members_Account": ["bob"]})
results["timsdk_ban_list"] = timsdk.post(
    "group_open_http_svc/get_group_ban_member", data={"GroupId": "room", "Offset": 0, "Limit": 100}
)
wrong_key = LoopbackClient(sdkappid, admin, TLSSig.gen_sig(admin, sdkappid, key + "x"))
results["timsdk_wrong_key"] = wrong_key.post(unban, data={"GroupId": "room", "Members_Account": ["carol"]})

tcim = TCIMClient(int(sdkappid), key, admin, tencent_url=f"{base_url}/v4")
response = requests.post(
    f"{tcim.tecent_url}/{unban}",
    params=tcim._gen_query(),
    data=json.dumps({"GroupId": "room", "Members_Account": ["carol"]}),
)
results["tcim_unban"] = response.json()
results["tcim_url_had_percent_2a"] = "%2A" in response.request.url or "*" not in tcim.user_sig

print(json.dumps(results))
