package redirector

import "strings"

// machineAgents are lowercase User-Agent substrings of link scanners,
// image proxies and link-preview fetchers: their hits are recorded with
// Machine set, so reports can tell people from machines.
var machineAgents = []string{
	"googleimageproxy",    // Gmail image proxy
	"yahoomailproxy",      // Yahoo Mail image proxy
	"outlookimageproxy",   // Outlook.com image proxy
	"microsoft office",    // Office link/protocol discovery
	"ms-office",           // Office apps fetching links
	"msoffice",            //
	"safelinks",           // Microsoft Defender Safe Links
	"bingpreview",         // Microsoft link preview
	"barracuda",           // Barracuda link protection
	"proofpoint",          // Proofpoint URL defense
	"mimecast",            // Mimecast URL protect
	"ironport",            // Cisco email security
	"symantec",            // Symantec / Broadcom email security
	"trendmicro",          //
	"trend micro",         //
	"fireeye",             //
	"forcepoint",          //
	"sophos",              //
	"zscaler",             //
	"cloudmark",           //
	"spamtitan",           //
	"hornetsecurity",      //
	"fortiguard",          //
	"virustotal",          //
	"slackbot",            // link previews in chat tools
	"twitterbot",          //
	"facebookexternalhit", //
	"linkedinbot",         //
	"whatsapp",            //
	"discordbot",          //
	"telegrambot",         //
	"skypeuripreview",     //
	"python-requests",     // scripts
	"go-http-client",      //
	"curl/",               //
	"wget/",               //
	"libwww-perl",         //
	"java/",               //
}

// isMachine says whether a User-Agent belongs to a known scanner or proxy.
// Apple Mail Privacy Protection fetches with the bare "Mozilla/5.0"; an
// empty User-Agent is a machine too.
func isMachine(ua string) bool {
	ua = strings.TrimSpace(ua)
	if ua == "" || ua == "Mozilla/5.0" {
		return true
	}
	l := strings.ToLower(ua)
	for _, s := range machineAgents {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}
