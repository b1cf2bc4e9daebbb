"""Word lists that keep the place matcher honest.

Thousands of towns are named after ordinary words ("Nice", "Mobile", "Most", "Spring", "Of").
A gazetteer name listed here only counts as a place with more evidence than its mere presence:
written with a capital inside a sentence, or after a place preposition, or as the short answer
to "which city?".
"""

from __future__ import annotations


def words(text: str) -> frozenset[str]:
    """A set of whitespace-separated words (keeps long lists readable)."""
    return frozenset(text.split())


COMMON_WORDS: frozenset[str] = words(
    """
    a about above across act add after again against age ago ahead air all almost alone along
    already also always am among an and angel angels another answer any anyone anything anyway
    anywhere apple april are area arm around art as ask at august aurora autumn away baby back
    bad bag ball band bank bar base bath bay be beach bear beautiful because bed been before
    begin behind being bell below belt best better between big bill bird bit black block blue
    board boat body bond book border born both bottom box boy branch brave bread break
    bridge bright bring broad brook brother brown build burn bus business busy but buy by call
    calm came camp can cape capital car card care carry case castle cat catch cause center
    central chance change chapel charity check cherry chief child church circle city
    clay clean clear cliff climb clock close cloud clover club coast cold college colony come
    common company concord content cook cool copper corner cost could count country county
    course court cove cover cream creek cross crown cut dale dam dance dark date day
    deal dear december deep deer delight desert did diamond die different dinner do does dog
    dollar done door double dove down downtown dream dress drink drive dry due during dust each
    eagle early earth east easy eat echo edge eight either eleven else end energy enough enter
    enterprise even evening ever every exchange eye face fact fair faith fall false family
    far farm fast father fear february feel felt few field fifth fine fire first fish five
    flat florence floor flower fly follow food foot for forest fork form fort forth fortune
    forward four fox free freedom friday friend from front fruit full fun function game garden
    gate gave general gentle get gift girl give glad glen go goes gold golden good got grace
    grand grass gray great green grove grow guard had hail half hall hand happy harbor hard
    harmony has hat have haven he head health hear heart heat heaven height hello help her
    here hero high hill him his history hit hold hole holiday holly home honey hope horn horse
    hot hour house how hub huge hundred hunt i ice idea if in independence inn into iron is
    island it its january jack job join joy july jump june just keep key kind king kiss knew
    know lake land lane large last late laurel law lead leaf learn least leave left less let
    level liberty life light like lily line lion list little live long look lot love low luck
    lucky made magic main make man many map maple march mark market may me mean meet middle
    might mile mill mind mine minute miss mission mobile moment monday money month moon more
    morning most mother mount mountain move much music must my name national nature near
    neck need never new news next nice night nine no noble none noon normal north nose not
    note nothing november now number oak oasis ocean october of off office often oil ok okay
    old on once one only open or orange order orient other our out over own page palm paper
    paradise park part party pass past peace pearl people period person pick piece pine place
    plain plan plant play please pleasant plenty point police pond pool poor port post power
    prairie present pretty price pride prince print program promise prospect public pull put
    queen question quick quiet race rain range rapid rather reach read reading ready real
    reason red rest rich ride right ring rise river road rock roll roman room root rose round
    row royal rule run rush safe said sale salt same sand saturday save saw say school sea
    season second see seem sell send sense september set settlement seven several shade shall
    shape she shell shelter shield ship shore short should show side sight sign silver simple
    since sing single sister sit six size sky sleep slow small smile snow so soft some son
    song soon sort sound south space speed split spot spring square stand star start state
    station stay steel step still stone stop store storm story street strong such sugar summer
    summit sun sunday sunny sunrise sunset sure surprise sweet table tail take talk tall tea
    teach temple ten test than thank thanks that the their them then there these they thing
    think third this those thousand three through thursday tide time to today together told
    tomorrow too took top total tour tower town trade trail train tree trip true trust try
    tuesday turn twelve twenty two under union unity until up upon us use valley very victory
    view village vine vista wait walk wall want war warm was wash watch water wave way we
    wednesday week welcome well wells went were west what when where which while white who
    whole why wide will wind window winter wish with without wood word work world would write
    yard year yes yesterday yet you young your zero
    """
)

# Lowercase words before a place: "in Nice", "for Reading".
PLACE_PREPOSITIONS: frozenset[str] = words(
    "in at for to of from near around about visiting outside inside"
)

# Words that may precede a city and belong to the user's place name ("downtown Chicago").
PLACE_MODIFIERS: frozenset[str] = words(
    "downtown uptown central north south east west northern southern eastern western greater "
    "midtown"
)

# Two- and three-character Chinese place names that are everyday words; they need a cue such as
# a following 市 or 的天气, or to be the whole answer to "哪个城市".
CJK_AMBIGUOUS: frozenset[str] = words(
    """
    东方 和平 大同 安康 合作 平安 太平 长安 天长 开平 新都 永和 中山 吉安 永安 长治 新乐 阿里
    福安 安宁 宁安 永康 建德 白沙 江山 龙井 海门 太和 兴化 和龙 普通 东城 西城 南城 北城 新城
    中心 城中 市中 中华 光明 黄金 富裕 安全 长城 文明 新民 大安 大方 正定 长乐 永定 新华 同心
    和顺 德化 龙泉 民主 共和 民权 公主 凤凰 丰收 金沙 石门 高平 新市 晴川 青春
    未来 前进 胜利 红旗 团结 东风 前锋 向阳 和谐 友谊 幸福 建设 新生 开发 高新 先锋 朝阳 东山
    南山 北山 西山 东湖 西湖 南湖 北湖 海滨 江北 江南 河西 河东 桥头
    """
)

# Words a clarification answer may wrap around a place: "I'm in Durham please".
ANSWER_FILLERS_EN: frozenset[str] = words(
    """
    a am an and are at check city could for give i i'm id i'd im in info information is it
    just know like look me my need of ok okay please plese thanks thank the this to town want
    wanna would you yes yeah about weather forecast what's whats how's for tell find out let
    """
)

# Replies that are never a place, even when the assistant asked where.
NOT_AN_ANSWER_EN: frozenset[str] = words(
    """
    no nope nah yes yeah ok okay thanks thank you sure maybe never mind anywhere nowhere
    dunno idk here there home everywhere somewhere why what huh hmm
    """
)

NOT_AN_ANSWER_ZH: frozenset[str] = words(
    """
    不知道 随便 都行 都可以 不用了 谢谢 好的 是的 不是 算了 没有 什么 为什么 这里 那里 这儿 那儿
    本地 当地 家里 你猜 不告诉你 哈哈 嗯嗯 好吧 可以 不要 不用 对的 没事
    """
)

# Countries come from the gazetteer; these first-level regions qualify a place name after a
# comma ("Paris, Texas", "Portland, Maine").
REGIONS_EN: frozenset[str] = frozenset(
    """
    alabama|alaska|arizona|arkansas|california|colorado|connecticut|delaware|florida|georgia|
    hawaii|idaho|illinois|indiana|iowa|kansas|kentucky|louisiana|maine|maryland|massachusetts|
    michigan|minnesota|mississippi|missouri|montana|nebraska|nevada|new hampshire|new jersey|
    new mexico|new york|north carolina|north dakota|ohio|oklahoma|oregon|pennsylvania|
    rhode island|south carolina|south dakota|tennessee|texas|utah|vermont|virginia|washington|
    west virginia|wisconsin|wyoming|ontario|quebec|british columbia|alberta|manitoba|
    saskatchewan|nova scotia|new brunswick|newfoundland|new south wales|victoria|queensland|
    tasmania|western australia|south australia|england|scotland|wales|northern ireland|
    tx|ca|ny|me|or|wa|fl|il|ma|ga|nc|oh|pa|mi|az|co|va|nj|tn|mo|mn|ky|la|al|sc|ut|nv|ia|ks|
    ok|ar|ms|ne|nm|id|wv|hi|nh|ri|mt|de|sd|nd|ak|vt|wy|ct|md|wi|in|usa|us|uk
    """.replace("\n", "")
    .replace(" |", "|")
    .strip()
    .split("|")
)

# Characters that may stand right before a Chinese place name: prepositions and verbs of going
# or asking, conjunctions ("在深圳", "去成都", "查北京", "不对，是伦敦", "北京和上海").
HAN_LEAD = frozenset("在去到从往至回由离住赴经来飞查看问是和跟与及、那有成于对喺系")

# Characters that may follow one: particles, administrative suffixes, conjunctions, time and
# question words, and the first characters of what is typically asked about a place.
HAN_FOLLOW = frozenset(
    "的呢吗吧啊呀嘛市省县区镇有和跟与及、到去飞往至会是今明后昨这那下上本周星礼怎如天冷热几多"
    "现最附还也都站机酒景玩旅住出回人在附近哪什要能可嘅有冇"
)

# Heads that make a place name part of something named after it: its dish, dialect, team...
# ("上海菜", "广东话", "北京队"); such a name is not the place asked about.
HAN_NAMED_AFTER = (
    "菜", "料理", "烤鸭", "烤肉", "拉面", "米粉", "米线", "小吃", "火锅", "炒饭", "面条", "话",
    "方言", "口音", "腔", "银行", "航空", "啤酒", "队", "风味", "口味", "移动", "联通", "电信",
)  # fmt: skip

# Words that mark a correction ("不对，是伦敦", "sorry, I meant Lyon"): the place that counts is the
# last one not negated.
CORRECTION_ZH = ("不对", "不是", "搞错", "错了", "我是说", "我说的是", "应该是", "改成", "换成")
CORRECTION_EN: frozenset[str] = words(
    "sorry meant mean actually instead oops rather correction no not"
)
NEGATION_BEFORE_ZH = ("不是", "不去", "而不是")
NEGATION_BEFORE_EN: frozenset[str] = words("not")
