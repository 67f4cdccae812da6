# Lab shell settings, sourced by every interactive bash in the node.
# After each command, record it in the history file, and with its exit code in
# /root/.lab_commands ("<code><TAB><command>", one line each: checks ask
# `lab-ran` whether a command worked, not only whether it was typed), and
# print a command-end mark with its exit code and command line; the lab strips
# the mark from the terminal output, checks the learner's work right away and
# puts the command on the recording's timeline.
HISTCONTROL=
HISTFILE=/root/.bash_history
HISTSIZE=5000
shopt -s histappend
__lab_last=
__lab_prompt() {
    local code=$?
    local last
    last=$(HISTTIMEFORMAT= history 1)
    if [ -n "$last" ] && [ "$last" != "$__lab_last" ]; then
        __lab_last=$last
        history -a
        local command=${last#"${last%%[![:space:]]*}"}   # "  42  docker ps" -> "42  docker ps"
        command=${command#*[[:space:]]}
        command=${command#"${command%%[![:space:]]*}"}
        printf '%s\t%s\n' "$code" "${command//$'\n'/ }" >> /root/.lab_commands
        # The mark carries the command line for the recording's timeline:
        # control characters would end the escape early, so they go.
        local shown=${command//[[:cntrl:]]/ }
        shown=${shown:0:500}
        if [ -n "$TMUX" ]; then
            printf '\033Ptmux;\033\033]6973;cmd-end;%s;%s\007\033\\' "$code" "$shown"
        else
            printf '\033]6973;cmd-end;%s;%s\007' "$code" "$shown"
        fi
    fi
    return $code
}
PROMPT_COMMAND=__lab_prompt
PS1='[\h] \w\$ '
alias ls='ls --color=auto'
# A machine brought back from a save says so, once (runtime/builtin/persist.py).
if [ -r /run/lab-motd ]; then
    cat /run/lab-motd
    rm -f /run/lab-motd
fi
